"""Exact resume of the stateful LR toolkit: a run that crashes after a checkpoint and is resumed
ends bit-identical to the uninterrupted run, with the plateau schedule's and AutoClip's states
restored from state.json; a checkpoint without them (an older format) still resumes, from fresh
states, and then diverges from the reference, which shows the saved states are the ones used."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import goodfit
from goodfit.runner import resume

from crash_helpers import Crash, CrashAt
from goodfit.engine.checkpoint import write_state

BASE = ["train.epochs=7", "train.batch_size=64", "train.threads=1", "train.early_stopping.patience=null",
        "train.checkpoint_interval=0", "train.checkpoint_every=9", "model.dropout=0.2", "train.log_every=4",
        "train.grad_clip={auto: 25, history: 40}"]
CASES = {
    "plateau": ["schedule={name: reduce_on_plateau, factor: 0.5, patience: 0, threshold: 0.03, cooldown: 1}",
                "schedule.warmup=1"],
    "one_cycle": ["optimizer.name=sgd", "optimizer.lr=0.1", "schedule={name: one_cycle, base_momentum: 0.8}"],
    "plateau_on_accuracy": ["schedule={name: reduce_on_plateau, monitor: val_accuracy, patience: 1, factor: 0.3}",
                            "schedule.interval=epoch"],
}


def _only_run(root: Path) -> Path:
    (d,) = [p for p in (root / "digits-mlp").iterdir() if p.is_dir()]
    return d


def _weights(run_dir: Path, which: str):
    return load_file(str(run_dir / "checkpoints" / which / "model.safetensors"))


def _events(run_dir: Path):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("time", "train_time")} for r in rows]


def _crashed(root: Path, overrides, step) -> Path:
    with pytest.raises(Crash):
        goodfit.run("digits-mlp", overrides, out=root, progress=False, callbacks=[CrashAt(step)])
    return _only_run(root)


@pytest.mark.parametrize("case", list(CASES))
# 20 steps per epoch, a mid-epoch checkpoint every 9 steps: crash at 45 resumes from the mid-epoch checkpoint
# at step 45, crash at 41 from the end of epoch 2 (step 40)
@pytest.mark.parametrize("crash_step, resume_step", [(45, 45), (41, 40)])
def test_crash_then_resume_is_bit_identical(tmp_path, case, crash_step, resume_step):
    overrides = BASE + CASES[case]
    ref = goodfit.run("digits-mlp", overrides, out=tmp_path / "ref", progress=False)
    cut = _crashed(tmp_path / "cut", overrides, crash_step)
    saved = json.loads((cut / "checkpoints" / "last" / "state.json").read_text())
    assert saved["fit"]["step"] == resume_step
    assert len(saved["grad_clip"]["norms"]) == 40 and saved["grad_clip"]["percentile"] == 25
    if case.startswith("plateau"):
        assert saved["schedule"]["num_bad_epochs"] >= 0 and "multiplier" in saved["schedule"]
    else:
        assert saved["schedule"] is None
    resumed = resume(cut, progress=False)
    assert [h["lr"] for h in resumed.history] == [h["lr"] for h in ref.history]
    for which in ("last", "best"):
        a, b = _weights(ref.dir, which), _weights(cut, which)
        assert all(torch.equal(a[k], b[k]) for k in a), f"{which} differs after resume"
    assert _events(ref.dir) == _events(cut)
    if case == "plateau":
        assert min(h["lr"] for h in ref.history) < ref.history[1]["lr"]  # the plateau did reduce the LR


def test_checkpoint_without_the_new_states_resumes_from_fresh_ones(tmp_path):
    overrides = BASE + CASES["plateau"]
    ref = goodfit.run("digits-mlp", overrides, out=tmp_path / "ref", progress=False)
    cut = _crashed(tmp_path / "cut", overrides, 100)
    path = cut / "checkpoints" / "last" / "state.json"
    doc = json.loads(path.read_text())
    assert doc["schedule"]["multiplier"] < 1.0  # the plateau had reduced the LR before the crash
    del doc["schedule"], doc["grad_clip"]  # the format before these states were saved
    write_state(path.parent, doc)  # re-signed: a hand edit without its checksum would be refused as damaged
    resumed = resume(cut, progress=False)
    assert resumed.history[5]["lr"] == ref.history[1]["lr"]  # epoch 6 restarted at the full LR: fresh plateau
    a, b = _weights(ref.dir, "last"), _weights(cut, "last")
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_the_doctor_resumes_with_its_evidence(tmp_path):
    """A resumed run is judged on all of its evidence: its first loss (a bad initialization shows only there),
    the early samples, the findings' first-seen steps. Diagnosis and doctor.jsonl equal the uninterrupted run's."""
    overrides = ["train.epochs=4", "train.threads=1", "train.checkpoint_interval=0", "train.checkpoint_every=9",
                 "model.init=normal(std=1.0)", "model.norm=none"]
    ref = goodfit.run("digits-mlp", overrides, out=tmp_path / "ref", progress=False)
    assert "bad_initial_loss" in {f.id for f in ref.diagnosis.warnings()}
    cut = _crashed(tmp_path / "cut", overrides, 45)
    saved = json.loads((cut / "checkpoints" / "last" / "state.json").read_text())
    assert saved["doctor"]["steps"] == list(range(1, 46))
    resume(cut, progress=False)
    assert json.loads((cut / "diagnosis.json").read_text()) == json.loads((ref.dir / "diagnosis.json").read_text())
    assert (cut / "doctor.jsonl").read_text() == (ref.dir / "doctor.jsonl").read_text()
