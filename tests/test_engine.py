"""The fit loop end to end: early stopping restores the best epoch exactly, the test lock holds,
the run directory follows DESIGN §1.4, and training is deterministic."""
import json

import pytest
import torch

import goodfit
from goodfit.engine import evaluate
from goodfit.errors import UserError
from goodfit.runner import build, evaluate_run

FAST = ["train.epochs=6", "train.batch_size=128"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return goodfit.run("digits-mlp", FAST + ["train.early_stopping.patience=2", "train.log_every=5"],
                       out=out, progress=False)


def test_run_directory_layout(digits_run):
    d = digits_run.dir
    assert d.parent.name == "digits-mlp"
    for name in ["recipe.yaml", "metrics.jsonl", "test.json"]:
        assert (d / name).is_file(), name
    for ck in ["last", "best"]:
        files = sorted(p.name for p in (d / "checkpoints" / ck).iterdir())
        assert files == ["model.safetensors", "optimizer.safetensors", "state.json"]


def test_metrics_jsonl_events(digits_run):
    events = [json.loads(line) for line in (digits_run.dir / "metrics.jsonl").read_text().splitlines()]
    kinds = {e["kind"] for e in events}
    assert kinds == {"step", "epoch", "eval"}
    for e in events:
        assert {"kind", "epoch", "step", "split", "time"} <= set(e)
    steps = [e for e in events if e["kind"] == "step"]
    assert all({"loss", "lr", "grad_norm"} <= set(e) for e in steps)
    evals = [e for e in events if e["kind"] == "eval"]
    assert [e["split"] for e in evals].count("test") == 1
    assert all("accuracy" in e and "macro_f1" in e for e in evals)
    epochs = [e for e in events if e["kind"] == "epoch"]
    assert [e["epoch"] for e in epochs] == list(range(1, len(epochs) + 1))


def test_restored_weights_reproduce_best_val_loss_exactly(digits_run):
    best = digits_run.best_epoch
    logged = digits_run.history[best - 1]["val_loss"]
    parts = build(digits_run.recipe, progress=False)  # same data, same loaders
    t = parts.trainer
    again = evaluate(digits_run.model, t.loss_fn, t.val_loader, t.make_metrics(), t.device)["loss"]
    assert again == logged
    assert min(h["val_loss"] for h in digits_run.history) == logged


def test_test_lock_refuses_second_evaluation(digits_run):
    with pytest.raises(UserError) as e:
        evaluate_run(digits_run.dir, split="test")
    assert "--force" in e.value.hint
    forced = evaluate_run(digits_run.dir, split="test", force=True)
    doc = json.loads((digits_run.dir / "test.json").read_text())
    assert [ev["forced"] for ev in doc["evaluations"]] == [False, True]
    assert forced["accuracy"] == pytest.approx(doc["metrics"]["accuracy"])


def test_val_evaluation_is_repeatable(digits_run):
    a = evaluate_run(digits_run.dir, split="val")
    assert a["loss"] == digits_run.history[digits_run.best_epoch - 1]["val_loss"]


def test_same_seed_gives_identical_losses(tmp_path):
    a = goodfit.run("wine-mlp", ["train.epochs=3"], out=tmp_path, progress=False)
    b = goodfit.run("wine-mlp", ["train.epochs=3"], out=tmp_path, progress=False)
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()):
        assert torch.equal(x, y)


@pytest.mark.parametrize("recipe", ["breast-cancer-mlp", "diabetes-mlp", "digits-cnn", "mnist1d-cnn"])
def test_each_task_runs(tmp_path, recipe):
    r = goodfit.run(recipe, ["train.epochs=1", "train.batch_size=256"], out=tmp_path, progress=False)
    expected = {"breast-cancer-mlp": "auroc", "diabetes-mlp": "r2", "digits-cnn": "accuracy", "mnist1d-cnn": "accuracy"}
    assert expected[recipe] in r.test


def test_regression_metrics_are_in_data_units(tmp_path):
    r = goodfit.run("diabetes-mlp", ["train.epochs=30"], out=tmp_path, progress=False)
    # diabetes targets span 25..346: an MSE in standardized units would be ~0.5, in data units thousands
    assert r.test["mse"] > 100 and r.test["r2"] > 0.2
