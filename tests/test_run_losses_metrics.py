"""Losses and metrics by name from a recipe, end to end (issue 3: "by name everywhere")."""
import json

import pytest

import goodfit


def test_loss_options_and_extra_metrics_from_the_recipe(tmp_path):
    r = goodfit.run("digits-mlp", ["loss.name=focal", "loss.gamma=2.0", "train.epochs=2",
                                   "metrics=[accuracy, balanced_accuracy, mcc, cohen_kappa, ece, top3_accuracy, log_loss]"],
                    out=tmp_path, progress=False)
    assert set(r.test) >= {"accuracy", "balanced_accuracy", "mcc", "cohen_kappa", "ece", "top3_accuracy", "log_loss"}
    saved = (r.dir / "recipe.yaml").read_text()
    assert "gamma: 2.0" in saved and "focal" in saved
    events = [json.loads(line) for line in (r.dir / "metrics.jsonl").read_text().splitlines()]
    assert any(e["kind"] == "eval" and "mcc" in e for e in events)


def test_early_stopping_mode_follows_the_metric_direction(tmp_path):
    r = goodfit.run("wine-mlp", ["train.epochs=3", "metrics=[accuracy, log_loss]",
                                 "train.early_stopping.monitor=val_log_loss"], out=tmp_path, progress=False)
    best = min(h["val_log_loss"] for h in r.history)
    assert r.history[r.best_epoch - 1]["val_log_loss"] == best


@pytest.mark.parametrize("override,expect", [
    ("loss.gammma=2.0", "did you mean 'gamma'"),
    ("loss.name=info_nce", "no recipe task"),
    ("loss.name=mse", "mse"),
    ("metrics=[acuracy]", "accuracy"),
])
def test_bad_loss_or_metric_names_are_user_errors(cli, tmp_path, override, expect):
    extra = ["--set", "loss.name=focal"] if override.startswith("loss.gammma") else []
    code, output = cli("train", "digits-mlp", *extra, "--set", override, "--out", tmp_path)
    assert code == 2, output
    assert "Traceback" not in output and expect in output


def test_binary_class_weights_train(tmp_path):
    # regression: balance=class_weights on a binary task used to crash building the loss
    r = goodfit.run("breast-cancer-mlp", ["data.balance=class_weights", "train.epochs=2"], out=tmp_path, progress=False)
    assert r.test["auroc"] > 0.8


@pytest.mark.parametrize("overrides", [
    ["schedule.name=step", "schedule.step_size=10", "schedule.gamma=0.5"],
    ["schedule.name=one_cycle", "schedule.pct_start=0.25"],
    ["schedule.name=multistep", "schedule.milestones=[10, 20]", "schedule.warmup=0.5"],
])
def test_schedules_by_name_from_the_recipe(tmp_path, overrides):
    r = goodfit.run("wine-mlp", ["train.epochs=3", *overrides], out=tmp_path, progress=False)
    assert len(r.history) == 3


@pytest.mark.parametrize("override,expect", [
    ("schedule.name=cosin", "did you mean 'cosine'"),
    ("schedule.gama=0.5", "gama"),
])
def test_bad_schedule_is_a_user_error(cli, tmp_path, override, expect):
    extra = ["--set", "schedule.name=step", "--set", "schedule.step_size=5"] if "gama" in override else []
    code, output = cli("train", "wine-mlp", *extra, "--set", override, "--out", tmp_path)
    assert code == 2 and expect in output and "Traceback" not in output, output


@pytest.mark.parametrize("overrides", [
    ["optimizer.name=rmsprop", "optimizer.lr=0.001"], ["optimizer.name=nadam"], ["optimizer.name=adagrad", "optimizer.lr=0.05"],
    ["train.grad_clip={agc: 0.05}"],
])
def test_optimizers_and_agc_by_name_from_the_recipe(tmp_path, overrides):
    r = goodfit.run("wine-mlp", ["train.epochs=5", *overrides], out=tmp_path, progress=False)
    assert r.history[-1]["train_loss"] < r.history[0]["train_loss"]


def test_two_clipping_methods_at_once_is_a_user_error(cli, tmp_path):
    code, output = cli("train", "wine-mlp", "--set", "train.grad_clip={norm: 1.0, agc: 0.01}", "--out", tmp_path)
    assert code == 2 and "exactly one" in output
