"""The doctor: findings format, the monitor's numbers against direct computation, the rules on
controlled faults, the run integration (diagnosis.json, exit codes, `goodfit doctor`, --fix) and repairs."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import goodfit
from goodfit.doctor import Diagnosis, Doctor, Finding
from goodfit.doctor.findings import verdict
from goodfit.doctor.monitor import Monitor
from goodfit.doctor.rules import THRESHOLDS, Context, curve_findings, gradient_findings, loss_findings
from goodfit.doctor.monitor import Sample


def test_findings_are_checked_and_round_trip_through_json():
    with pytest.raises(ValueError):
        Finding("no_such_id", "warning", "x")
    with pytest.raises(ValueError):
        Finding("plateau", "fatal", "x")
    f = Finding("lr_too_high", "warning", "lower it", evidence={"x": 0.123456789, "y": float("inf")},
                prescription=[{"action": "lower", "recipe_patch": {"optimizer.lr": 0.001}}], epoch=2, step=40)
    d = Diagnosis(verdict([f]), [f])
    doc = json.loads(json.dumps(d.to_json()))
    assert doc["findings"][0]["evidence"] == {"x": 0.123457, "y": "inf"}
    back = Diagnosis.from_json(doc)
    assert back.findings[0].id == "lr_too_high" and back.recipe_patch() == {"optimizer.lr": 0.001}


def test_verdicts():
    w = lambda i, s="warning": Finding(i, s, "")  # noqa: E731
    assert verdict([]) == "good_fit"
    assert verdict([w("overfitting", "info")]) == "good_fit"
    assert verdict([w("overfitting")]) == "overfitting"
    assert verdict([w("underfitting"), w("lr_too_low")]) == "underfitting"
    assert verdict([w("divergence", "error"), w("overfitting")]) == "failed"


def _mlp(act=nn.ReLU):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), act(), nn.Linear(16, 16), act(), nn.Linear(16, 3))


def test_monitor_numbers_equal_direct_computation():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    with torch.no_grad():  # kill 4 units of the first ReLU for every input: a large negative bias
        model[0].bias[:4] = -1e3
    mon = Monitor(model, every=1, optimizer=opt)
    mon.arm()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    grads = {n: p.grad.norm().item() for n, p in model.named_parameters()}
    opt.step()
    s = mon.read(step=1, epoch=1)
    for layer in ("0", "2", "4"):
        assert s.grad_norm[layer] == pytest.approx(grads[f"{layer}.weight"], rel=1e-6)
        w = model.get_submodule(layer).weight
        assert s.update_ratio[layer] == pytest.approx((w - before[f"{layer}.weight"]).norm().item() / w.norm().item(),
                                                      rel=1e-5)
    for layer in ("0", "2", "4"):  # a unit's weight-vector norm: ‖W‖ / √(rows)
        w = model.get_submodule(layer).weight
        assert s.weight_scale[layer] == pytest.approx(w.norm().item() / w.shape[0] ** 0.5, rel=1e-5)
    h = model[1](model[0](x))
    assert s.dead_fraction["1"] == pytest.approx(((h > 0).sum(0) == 0).float().mean().item())
    assert s.dead_fraction["1"] >= 4 / 16
    assert s.stale_grad == pytest.approx(0.0, abs=1e-6) and s.untrained == [] and not s.outputs_are_probabilities
    assert not mon.armed and not mon._hooks


def test_monitor_sees_saturation_a_missing_zero_grad_and_untrained_weights():
    model = _mlp(nn.Sigmoid)
    with torch.no_grad():
        model[0].weight.mul_(100)  # pre-activations of hundreds: the sigmoids sit at 0 or 1
    opt = torch.optim.SGD(list(model[2].parameters()) + list(model[4].parameters()), lr=0.1)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    mon = Monitor(model, every=1, optimizer=opt)
    for step in (1, 2):
        mon.arm()
        nn.functional.cross_entropy(model(x), y).backward()  # no zero_grad: gradients pile up
        opt.step()
        s = mon.read(step=step, epoch=1)
    assert s.saturation["1"] > 0.9
    assert s.stale_grad > 0.1
    assert s.untrained == ["0 (not in the optimizer)"]
    # a weight outside the optimizer keeps its .grad forever: it is left out of the gradient ratios
    assert set(s.grad_norm) == {"2", "4"}


def test_vanishing_and_exploding_thresholds():
    def sample(first, last, total=1.0):
        return Sample(step=1, epoch=1, grad_norm={"a": first, "b": last}, total_grad_norm=total)

    ctx = Context(num_classes=10, lr=0.1)
    ids = lambda ss: {f.id for f in gradient_findings(ss, ctx)}  # noqa: E731
    assert ids([sample(1.0, 1.0)] * 4) == set()
    assert ids([sample(1e-6, 1.0)] * 4) == {"vanishing_gradients"}
    assert ids([sample(THRESHOLDS["exploding_ratio"] * 2, 1.0)] * 4) == {"exploding_gradients"}
    assert ids([sample(1, 1, 1.0)] * 3 + [sample(1, 1, 1e6)]) == {"exploding_gradients"}


def _run(tmp_path, *sets, recipe="digits-mlp"):
    over = {"train.threads": 1, "train.epochs": 6, "train.checkpoint_interval": 1e9}
    for item in sets:
        k, v = item.split("=", 1)
        over[k] = v
    return goodfit.run(recipe, [f"{k}={v}" for k, v in over.items()], out=tmp_path, progress=False)


def test_a_healthy_run_is_a_good_fit_without_warnings(tmp_path):
    run = _run(tmp_path)
    assert run.diagnosis.verdict == "good_fit"
    assert not run.diagnosis.warnings(), [f.to_json() for f in run.diagnosis.warnings()]
    assert (run.dir / "diagnosis.json").is_file() and (run.dir / "doctor.jsonl").is_file()


def test_a_tiny_lr_is_diagnosed_lr_too_low_and_fixed_by_the_patch(tmp_path, cli):
    run = _run(tmp_path, "optimizer.lr=1e-7")
    ids = {f.id for f in run.diagnosis.warnings()}
    assert "lr_too_low" in ids and "plateau" not in ids and "lr_too_high" not in ids
    finding = next(f for f in run.diagnosis.findings if f.id == "lr_too_low")
    assert finding.evidence["median_update_ratio"] < THRESHOLDS["update_ratio_low"]
    assert finding.prescription[0]["recipe_patch"]["optimizer.lr"] == pytest.approx(1e-6)
    # the CLI re-derives the same findings from the run's files, and --fix writes the patched recipe
    code, out = cli("doctor", run.dir, "--json")
    assert code == 0, out
    assert {f["id"] for f in json.loads(out)["findings"]} == {f.id for f in run.diagnosis.findings}
    # ... with the same step and epoch of first detection: both replay the epoch ends on the evidence up to each
    assert sorted((f["id"], f["step"], f["epoch"]) for f in json.loads(out)["findings"]) == sorted(
        (f.id, f.step, f.epoch) for f in run.diagnosis.findings)
    code, out = cli("doctor", run.dir, "--fix")
    assert code == 0, out
    fixed = goodfit.load_recipe(run.dir / "recipe.fixed.yaml")
    assert fixed.optimizer.lr == pytest.approx(1e-6)


def test_divergence_stops_at_its_step_with_exit_3_and_is_repaired_in_flight(tmp_path, cli):
    code, out = cli("train", "digits-mlp", "--set", "train.threads=1", "--set", "optimizer.name=sgd",
                    "--set", "optimizer.lr=20", "--set", "train.epochs=3", "--out", tmp_path, "-q")
    assert code == 3, out
    run_dir = next(p for p in (tmp_path / "digits-mlp").iterdir())
    diag = json.loads((run_dir / "diagnosis.json").read_text())
    assert diag["verdict"] == "failed"
    div = next(f for f in diag["findings"] if f["id"] == "divergence")
    assert div["step"] <= 20  # within the first epoch (20 steps), not at its end
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(m["epoch"] <= 1 for m in metrics if m["kind"] == "epoch")
    run = _run(tmp_path, "optimizer.name=sgd", "optimizer.lr=20", "doctor.auto_repair=true", "train.epochs=10")
    # rolled back with a lower LR: at the overflow, or before it when a sample already saw the oversized steps
    assert run.diagnosis.repairs and run.diagnosis.repairs[0]["id"] in ("divergence", "lr_too_high")
    assert all("lowered the LR 10x" in r["action"] for r in run.diagnosis.repairs)
    assert run.diagnosis.verdict == "good_fit" and run.test["accuracy"] > 0.85


def test_the_doctor_in_a_hand_written_loop_finds_code_faults():
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = torch.tensor(d.data / 16, dtype=torch.float32), torch.tensor(d.target)

    def train(fault):
        torch.manual_seed(0)
        layers = [nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)] + ([nn.Softmax(dim=1)] if fault == "softmax" else [])
        model = nn.Sequential(*layers)
        params = list(model[2].parameters()) if fault == "missing" else list(model.parameters())
        opt = torch.optim.Adam(params, lr=3e-3)
        doctor = Doctor(model, opt, num_classes=10, every=10)
        for _ in range(4):
            for i in range(0, 1500, 50):
                if fault != "no_zero_grad":
                    opt.zero_grad()
                loss = nn.functional.cross_entropy(model(x[i:i + 50]), y[i:i + 50])
                loss.backward()
                opt.step()
                doctor.step(loss)
            with torch.no_grad():
                doctor.epoch(val_loss=nn.functional.cross_entropy(model(x[1500:]), y[1500:]).item())
        return {f.id for f in doctor.report().warnings()}

    assert train("none") == set()
    assert "softmax_before_loss" in train("softmax")
    assert "missing_zero_grad" in train("no_zero_grad")
    assert "parameters_not_training" in train("missing")


def test_exploding_or_vanishing_for_a_stretch_of_the_run_is_reported():
    def sample(ratio):
        return Sample(step=1, epoch=1, grad_norm={"a": ratio, "b": 1.0}, total_grad_norm=1.0)

    ctx = Context(num_classes=10, lr=0.1)
    ids = lambda ss: {f.id for f in gradient_findings(ss, ctx)}  # noqa: E731
    high, low, calm = THRESHOLDS["exploding_ratio"] * 3, THRESHOLDS["vanishing_ratio"] / 3, 1.0
    n = int(THRESHOLDS["persistent_samples"])
    # a chaotic start the optimizer later tamed: n samples are enough, n - 1 are not, in a run of 4n samples
    assert ids([sample(high)] * n + [sample(calm)] * 3 * n) == {"exploding_gradients"}
    assert ids([sample(high)] * (n - 1) + [sample(calm)] * (3 * n + 1)) == set()
    assert ids([sample(low)] * n + [sample(calm)] * 3 * n) == {"vanishing_gradients"}
    finding = gradient_findings([sample(high)] * n + [sample(calm)] * 3 * n, ctx)[0]
    assert finding.evidence["first_last_grad_ratio"] == pytest.approx(high) and finding.evidence["share_of_samples"] == 0.25


def _dying(dead_later: float, first_update: float, dead_first: float = 0.0) -> list[Sample]:
    """Samples of a run whose ReLU layer goes from `dead_first` to `dead_later` dead units."""
    out = [Sample(step=1, epoch=1, update_ratio={"a": first_update}, dead_fraction={"r": dead_first})]
    out += [Sample(step=25 * i, epoch=i, update_ratio={"a": 0.005}, dead_fraction={"r": dead_later}) for i in (1, 2, 3)]
    return out


def test_units_killed_by_large_steps_mean_the_lr_is_too_high():
    ctx = Context(num_classes=10, lr=0.1)
    dead = Finding("dead_units", "warning", "")
    losses = [2.3 - 2.2 * i / 99 for i in range(100)]  # a loss that ends near a fit: the units' death is the evidence
    steps = list(range(1, 101))

    def ids(samples):
        return {f.id for f in loss_findings(losses, steps, samples, ctx, [dead], 4)}

    big, small = 3 * THRESHOLDS["update_ratio_high"], THRESHOLDS["update_ratio_high"] / 3
    assert ids(_dying(0.9, big)) == {"lr_too_high"}
    f = loss_findings(losses, steps, _dying(0.9, big), ctx, [dead], 4)[0]
    assert f.evidence["update_ratio_before_units_died"] == pytest.approx(big)
    assert f.prescription[0]["recipe_patch"]["optimizer.lr"] == pytest.approx(0.1 / 3, rel=1e-2)
    assert ids(_dying(0.9, small)) == set()                 # units that died under ordinary steps: not the LR
    assert ids(_dying(0.9, big, dead_first=0.9)) == set()   # dead from the start: the initialization, not the LR


def test_overfitting_needs_a_fitted_training_set_and_a_gap_is_not_one_under_class_imbalance():
    ctx = Context(num_classes=10)
    rising = [{"train_loss": 2.0 - 0.1 * i, "val_loss": 1.0 + 0.3 * i} for i in range(6)]  # broken training, val up
    assert not [f for f in curve_findings(rising, ctx, None) if f.id == "overfitting"]
    fitted = [{"train_loss": 1.0 / (i + 1), "val_loss": 1.0 + 0.3 * i} for i in range(6)]
    assert [f.severity for f in curve_findings(fitted, ctx, 6) if f.id == "overfitting"] == ["warning"]
    gap = [{"train_loss": 1.0 / (i + 1), "val_loss": 1.2} for i in range(6)]  # val flat, far above train
    assert [f.id for f in curve_findings(gap, ctx, 6)] == ["overfitting"]
    assert curve_findings(gap, ctx, 6, explained={"class_imbalance"}) == []


def test_a_loss_stuck_at_the_zero_saddle_is_a_plateau_repaired_by_reinitializing(tmp_path):
    tiny = ("model.init=normal(std=0.001)", "optimizer.name=sgd", "optimizer.lr=0.05")
    run = _run(tmp_path, *tiny)
    plateau = next(f for f in run.diagnosis.warnings() if f.id == "plateau")
    assert plateau.evidence["weight_scale"] < THRESHOLDS["tiny_weights"]
    assert plateau.prescription[0]["recipe_patch"] == {"model.init": "default"}
    assert run.history[-1]["val_accuracy"] < 0.2
    fixed = _run(tmp_path, *tiny, "doctor.auto_repair=true", "train.epochs=9")
    assert [r["id"] for r in fixed.diagnosis.repairs] == ["plateau"]
    # at the saddle no LR change helps: re-initialized (He, matched to the ReLUs) at the first epoch end, not after
    # plateau_epochs flat epochs
    assert "re-initialized the weights (he init)" in fixed.diagnosis.repairs[0]["action"]
    assert fixed.diagnosis.repairs[0]["epoch"] == 1
    assert max(h["val_accuracy"] for h in fixed.history) > 0.9


def test_gradients_exploding_from_the_initialization_are_repaired_by_a_matched_reinitialization(tmp_path):
    chaotic = ("model.depth=12", "model.width=128", "model.activation=tanh", "model.norm=none",
               "model.init=normal(std=0.35)")
    run = _run(tmp_path, *chaotic)
    assert "exploding_gradients" in {f.id for f in run.diagnosis.warnings()}
    assert max(h["val_accuracy"] for h in run.history) < 0.5
    fixed = _run(tmp_path, *chaotic, "doctor.auto_repair=true")
    assert [r["id"] for r in fixed.diagnosis.repairs] == ["exploding_gradients"]
    assert fixed.diagnosis.repairs[0]["step"] == 1  # seen on the first sample: the initialization's fault
    assert "xavier init" in fixed.diagnosis.repairs[0]["action"]  # Glorot's init, matched to tanh
    assert max(h["val_accuracy"] for h in fixed.history) > 0.85


def test_matched_initialization_follows_the_activation():
    from goodfit.nn.init import matched

    assert matched(_mlp(nn.ReLU)) == "he" and matched(_mlp(nn.Tanh)) == "xavier" and matched(_mlp(nn.Sigmoid)) == "xavier"
    assert matched(nn.Sequential(nn.Linear(3, 3), nn.LeakyReLU())) == "he"
    assert matched(nn.Sequential(nn.Linear(3, 3))) == "default"


def test_the_loss_ema_equals_its_recursion():
    from goodfit.doctor.rules import _ema

    x = torch.randn(500, generator=torch.Generator().manual_seed(0)).tolist()
    for alpha in (0.01, 0.1, 0.3):
        m, want = None, []
        for v in x:
            m = v if m is None else (1 - alpha) * m + alpha * v
            want.append(m)
        assert _ema(x, alpha).tolist() == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert len(_ema([], 0.1)) == 0


def test_sampling_is_dense_early_then_every_k_steps():
    mon = Monitor(_mlp(), every=50)
    assert [s for s in range(1, 301) if mon.due(s)] == [1, 10, 25, 50, 100, 150, 200, 250, 300]


def test_label_smoothing_raises_the_reachable_floor_and_a_penalty_is_not_a_bad_init():
    ctx = Context(num_classes=10, label_smoothing=0.2)
    # the floor is the entropy of the smoothed target: check against a direct computation
    q = torch.full((10,), 0.02, dtype=torch.float64)
    q[0] = 0.82
    assert ctx.floor_loss() == pytest.approx(float(-(q * q.log()).sum()), rel=1e-9)
    assert Context(num_classes=10).floor_loss() == 0.0
    assert ctx.fit_bar(0.3) == pytest.approx(ctx.floor_loss() + 0.3 * (math.log(10) - ctx.floor_loss()))
    from goodfit.doctor.rules import initial_loss_finding

    assert initial_loss_finding(10.0, Context(num_classes=10)) is not None
    assert initial_loss_finding(10.0, Context(num_classes=10, penalized=True)) is None


def test_a_smoothed_healthy_run_is_not_underfitting(tmp_path):
    run = _run(tmp_path, "loss.label_smoothing=0.2", "train.epochs=10")
    assert run.test["accuracy"] > 0.9
    assert "underfitting" not in {f.id for f in run.diagnosis.warnings()}, [f.to_json() for f in run.diagnosis.warnings()]


def test_goodfit_doctor_on_bad_run_directories_exits_2(cli, tmp_path):
    code, out = cli("doctor", tmp_path / "nowhere")
    assert code == 2 and "not a goodfit run directory" in out and "Traceback" not in out
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text("name: x\n")
    code, out = cli("doctor", run)
    assert code == 2 and "no doctor.jsonl" in out and "Traceback" not in out
    (run / "doctor.jsonl").write_text('{"kind": "context"}\nnot json\n')
    code, out = cli("doctor", run)
    assert code == 2 and "not valid JSON" in out and "Traceback" not in out
    (run / "doctor.jsonl").write_text("[1, 2]\n")
    code, out = cli("doctor", run)
    assert code == 2 and "not a JSON object" in out and "Traceback" not in out
    (run / "doctor.jsonl").write_text('{"kind": "loss"}\n')
    code, out = cli("doctor", run)
    assert code == 2 and "damaged" in out and "Traceback" not in out
    (run / "doctor.jsonl").write_text('{"kind": "preflight", "id": "no_such_finding"}\n')
    code, out = cli("doctor", run)
    assert code == 2 and "damaged" in out and "Traceback" not in out


def test_regression_as_good_as_a_linear_fit_is_not_underfitting(tmp_path):
    from goodfit.data.quality import linear_baseline_mse

    # the baseline against its formula: y = Xw + noise of variance s², so a linear fit leaves about s²
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 5, generator=g)
    y = x @ torch.randn(5, 1, generator=g) + 0.5 * torch.randn(2000, 1, generator=g)
    assert linear_baseline_mse(x, y) == pytest.approx(0.25, rel=0.1)
    # diabetes: a linear model explains about half the variance; the default MLP matches it, and that is a good fit
    run = _run(tmp_path, "train.epochs=60", recipe="diabetes-mlp")
    assert run.diagnosis.verdict == "good_fit", [f.to_json() for f in run.diagnosis.warnings()]
    # an MLP that barely trains stays far above the baseline: underfitting, with the baseline as evidence
    slow = _run(tmp_path, "train.epochs=8", "optimizer.lr=1e-5", recipe="diabetes-mlp")
    under = next(f for f in slow.diagnosis.warnings() if f.id == "underfitting")
    assert under.evidence["val_loss"] > 1.1 * under.evidence["linear_baseline_loss"]


def test_gradients_exploding_mid_run_are_clipped_at_the_p90_of_the_healthy_norms():
    from functools import partial
    from types import SimpleNamespace

    import numpy as np

    from goodfit.doctor.callback import DoctorCallback
    from goodfit.optim.clipping import clip_by_norm

    model = _mlp()
    trainer = SimpleNamespace(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), clip=None)
    cb = DoctorCallback(Context(num_classes=3), auto_repair=True)
    state = SimpleNamespace(step=0, epoch=0, batch_in_epoch=1)
    good = {k: v.clone() for k, v in model.state_dict().items()}

    def feed(first_grad, total):
        state.step += 10
        cb.losses.append(1.0)
        s = Sample(step=state.step, epoch=1, grad_norm={"0": first_grad, "2": 1.0, "4": 1.0},
                   weight_norm={"0": 5.0, "2": 5.0, "4": 5.0}, update_ratio={"0": 0.01, "2": 0.01, "4": 0.01},
                   total_grad_norm=total)
        cb.samples.append(s)
        cb._after_sample(trainer, state, s)

    healthy = [float(n) for n in range(1, 21)]
    for n in healthy:
        feed(1.0, n)
    assert trainer.clip is None and not cb.repairs
    with torch.no_grad():  # the explosion moves the weights: the repair must undo that too
        model[0].weight.add_(100.0)
    feed(1e4, 1e4)  # the first layer's gradient 10^4 x the last's, after 20 healthy samples
    assert [r["id"] for r in cb.repairs] == ["exploding_gradients"]
    p90 = float(np.percentile(healthy, 90, method="inverted_cdf"))
    assert isinstance(trainer.clip, partial) and trainer.clip.func is clip_by_norm
    assert trainer.clip.keywords["max_norm"] == p90 == 18.0
    assert f"clipped gradients at norm {p90:.3g}" in cb.repairs[0]["action"]
    assert all(torch.equal(v, good[k]) for k, v in model.state_dict().items())  # rolled back to a healthy state
