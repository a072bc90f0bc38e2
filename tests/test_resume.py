"""Exact resume: a run killed with SIGKILL at a random step and resumed ends bit-identical to an
uninterrupted run of the same seed (CPU)."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

RECIPE = ["digits-mlp", "--set", "train.epochs=15", "--set", "train.batch_size=16", "--set", "train.checkpoint_every=13",
          "--set", "model.dropout=0.2", "--set", "train.early_stopping.patience=null", "-q"]


def _goodfit(*args):
    return [sys.executable, "-m", "goodfit", *map(str, args)]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def _run_dir(root: Path) -> Path:
    dirs = [p for p in (root / "digits-mlp").iterdir() if p.is_dir()]
    assert len(dirs) == 1
    return dirs[0]


def _weights(run_dir: Path, which: str):
    return load_file(str(run_dir / "checkpoints" / which / "model.safetensors"))


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    ref_root, cut_root = tmp_path / "ref", tmp_path / "cut"
    subprocess.run(_goodfit("train", *RECIPE, "--out", ref_root), check=True, env=_env(), capture_output=True)
    ref = _run_dir(ref_root)

    rng = random.Random(int(os.environ.get("GOODFIT_KILL_SEED", "0")) or None)
    killed = False
    delay = 0.5
    for _attempt in range(4):  # the kill must land mid-training; retry with an earlier kill if it did not
        proc = subprocess.Popen(_goodfit("train", *RECIPE, "--out", cut_root), env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and not list(cut_root.glob("digits-mlp/*/checkpoints/last/state.json")):
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, delay))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        # landed mid-training only if training had not finished (the test split is scored right after)
        if proc.returncode == -signal.SIGKILL and not list(cut_root.glob("digits-mlp/*/test.json")):
            killed = True
            break
        for p in cut_root.glob("digits-mlp/*"):
            shutil.rmtree(p)
        delay /= 4
    assert killed, "training finished before the kill could land"
    cut = _run_dir(cut_root)
    assert not (cut / "test.json").exists()

    done = subprocess.run(_goodfit("resume", cut, "-q"), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for which in ("last", "best"):
        a, b = _weights(ref, which), _weights(cut, which)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{which}/{k} differs after resume"
    # the resumed log is the reference log: same events, same losses
    def events(run_dir):
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in ("time", "train_time")} for r in rows]

    assert events(ref) == events(cut)


def test_resume_of_finished_run_changes_nothing(tmp_path):
    subprocess.run(_goodfit("train", "wine-mlp", "--set", "train.epochs=2", "-q", "--out", tmp_path),
                   check=True, env=_env(), capture_output=True)
    run_dir = next((tmp_path / "wine-mlp").iterdir())
    before = _weights(run_dir, "last")
    done = subprocess.run(_goodfit("resume", run_dir, "-q"), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    after = _weights(run_dir, "last")
    assert all(torch.equal(before[k], after[k]) for k in before)
