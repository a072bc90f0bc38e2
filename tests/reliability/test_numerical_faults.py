"""Numerical faults: a NaN in one training batch, or an Inf in the model's output (so in the loss), at step K
stops the run (TrainingFailed: exit 3) with a `divergence` finding at step K, and the checkpoints hold only
finite weights: `best` intact, `last` from before step K. Without the doctor, the engine's divergence guard
detects it at the next logging step (latency <= train.log_every steps, no per-step host sync); with the
doctor (the default) it is caught at step K itself on CPU. With doctor.auto_repair the run rolls back to the
last healthy state, lowers the LR and finishes."""
import json

import pytest
import reliability_harness as h
import torch

import goodfit
from goodfit.engine.checkpoint import read_checkpoint
from goodfit.errors import TrainingFailed

AT = 13  # epoch 2, step 5 of 8; checkpoints every 3 steps, so `last` is at step 12 when it happens
LOG_EVERY = 5


class Poison:
    """Training forward number `at` (= optimizer step, without accumulation) gets a NaN input or an Inf output."""

    def __init__(self, at: int, what: str):
        self.at, self.what, self.seen = at, what, 0

    def on_fit_start(self, trainer, state):
        trainer.model.register_forward_pre_hook(self.pre)
        trainer.model.register_forward_hook(self.post)

    def _due(self, module) -> bool:
        return module.training and self.seen == self.at

    def pre(self, module, args):
        self.seen += module.training
        if self.what == "nan_batch" and self._due(module):
            x = args[0].clone()
            x[0, 0] = float("nan")  # one value of one sample
            return (x, *args[1:])

    def post(self, module, args, out):
        if self.what == "inf_loss" and self._due(module):
            return out * float("inf")


def _run(tmp_path, what, doctor):
    overrides = [*h.OVERRIDES, f"train.log_every={LOG_EVERY}", f"doctor.enabled={str(doctor).lower()}"]
    with pytest.raises(TrainingFailed) as failed:
        goodfit.run(h.RECIPE, overrides, out=tmp_path, progress=False, callbacks=[Poison(AT, what)])
    assert failed.value.exit_code == 3
    return h.only_run(tmp_path)


def _finite(tensors):
    return all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


@pytest.mark.parametrize("what", ["nan_batch", "inf_loss"])
@pytest.mark.parametrize("doctor", [False, True])
def test_non_finite_step_stops_the_run_with_a_divergence_finding(tmp_path, what, doctor):
    run_dir = _run(tmp_path, what, doctor)
    diagnosis = json.loads((run_dir / "diagnosis.json").read_text())
    (finding,) = [f for f in diagnosis["findings"] if f["id"] == "divergence"]
    assert diagnosis["verdict"] == "failed" and finding["severity"] == "error"
    assert finding["step"] == AT  # the step it happened at, exactly
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last_step = max(e["step"] for e in events if e["kind"] == "step")
    stopped = events[-1]["step"]  # the epoch line written as the run stopped
    # detection latency: the doctor reads each loss on CPU; the guard looks at each logging step
    assert stopped == AT if doctor else AT <= stopped <= AT + LOG_EVERY
    assert last_step <= stopped
    last, best = (read_checkpoint(run_dir / "checkpoints" / name) for name in ("last", "best"))
    assert last[2]["fit"]["step"] == 12 and _finite(last[0]) and _finite(last[1])
    assert best[2]["early_stopping"]["best_epoch"] == 1 and _finite(best[0])


def test_the_guard_reports_the_exact_step_with_gradient_accumulation(tmp_path):
    overrides = [*h.OVERRIDES, "train.accumulate=2", "train.batch_size=8", "train.log_every=4", "doctor.enabled=false"]
    with pytest.raises(TrainingFailed):
        goodfit.run(h.RECIPE, overrides, out=tmp_path, progress=False, callbacks=[Poison(2 * AT, "nan_batch")])
    diagnosis = json.loads((h.only_run(tmp_path) / "diagnosis.json").read_text())
    assert diagnosis["findings"][0]["step"] == AT  # micro-batch 2K belongs to optimizer step K


@pytest.mark.parametrize("what", ["nan_batch", "inf_loss"])
def test_with_auto_repair_the_run_rolls_back_and_continues(tmp_path, what):
    overrides = [*h.OVERRIDES, f"train.log_every={LOG_EVERY}", "doctor.auto_repair=true", "doctor.every=1"]
    run = goodfit.run(h.RECIPE, overrides, out=tmp_path, progress=False, callbacks=[Poison(AT, what)])
    (repair,) = [r for r in run.diagnosis.repairs if r["id"] == "divergence"]
    assert repair["step"] == AT and "rolled back" in repair["action"]
    assert run.state.stop_reason != "diverged" and run.test is not None
    assert all(torch.isfinite(torch.tensor(h_["train_loss"])) for h_ in run.history)
    assert _finite(read_checkpoint(run.dir / "checkpoints" / "last")[0])
    assert "divergence" not in {f.id for f in run.diagnosis.findings if f.severity == "error"}
