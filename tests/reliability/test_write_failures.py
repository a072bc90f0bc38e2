"""Write failures: a disk that fills up or turns read-only during training (simulated by patching the writer)
stops the run with exit 2 and one clear message (no traceback); the checkpoints written before stay intact,
and once the disk is fixed `goodfit resume` ends exactly where the uninterrupted run does."""
import errno
import os
from pathlib import Path

import pytest
import reliability_harness as h

from goodfit.engine import checkpoint
from goodfit.engine.callbacks import MetricsLog
from goodfit.engine.checkpoint import read_checkpoint

FAIL_AT = 7  # the 7th checkpoint write fails: last at step 15 (before it: last 3, 6, best + last 8, last 9, 12)


def _failing(real, exc, when):
    def fake(*args, **kwargs):
        if when(*args):
            raise exc
        return real(*args, **kwargs)
    return fake


FAULTS = {
    "disk full writing tensors": ("save_file", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "No space left"),
    "read-only folder": ("mkdir", PermissionError(errno.EROFS, os.strerror(errno.EROFS)), "Read-only file system"),
    "no permission to rename": ("rename", PermissionError(errno.EACCES, os.strerror(errno.EACCES)), "Permission denied"),
    "disk full flushing the log": ("offset", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "No space left"),
}


def _patch(monkeypatch, target, exc):
    base = checkpoint._writes  # the counter is per process: count this run's writes only

    def nth(*_):
        return checkpoint._writes - base == FAIL_AT

    if target == "save_file":
        monkeypatch.setattr(checkpoint, "save_file", _failing(checkpoint.save_file, exc, nth))
    elif target == "mkdir":
        monkeypatch.setattr(Path, "mkdir", _failing(Path.mkdir, exc, lambda p, *a: p.name.endswith(".tmp") and nth()))
    elif target == "rename":  # fails the last rename of the swap, after `last` has already moved to `prev`
        monkeypatch.setattr(Path, "rename", _failing(Path.rename, exc, lambda p, *a: p.name == "last.tmp" and nth()))
    else:
        state = {"calls": 0}

        def offset(self, real=MetricsLog.offset):
            state["calls"] += 1
            if state["calls"] == FAIL_AT:
                raise exc
            return real(self)
        monkeypatch.setattr(MetricsLog, "offset", offset)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_write_failure_is_a_clear_error_and_loses_nothing(cli, tmp_path, monkeypatch, fault):
    target, exc, words = FAULTS[fault]
    with monkeypatch.context() as m:
        _patch(m, target, exc)
        code, output = cli("train", h.RECIPE, *h.set_args(), "-q", "--out", tmp_path / "cut")
    assert code == 2, output
    assert "Traceback" not in output and "cannot write checkpoint" in output and words in output, output
    run_dir = h.only_run(tmp_path / "cut")
    ckpts = run_dir / "checkpoints"
    steps = [read_checkpoint(ckpts / name)[2]["fit"]["step"] for name in ("last", "prev")]
    assert steps == [12, 9]  # the two newest good checkpoints, both verified
    assert sorted(p.name for p in ckpts.iterdir()) == ["best", "last", "prev"]  # nothing half-written left
    if fault == "no permission to rename":  # the disk is fixed: resume continues as if nothing happened
        ref, _ = h.reference(tmp_path / "ref")
        code, output = cli("resume", run_dir, "-q")
        assert code == 0, output
        assert h.differences(ref.dir, run_dir) == []
