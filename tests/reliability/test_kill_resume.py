"""Crashes: a run SIGKILLed at chosen points (before its first checkpoint, inside a checkpoint write, mid-step,
mid-validation), resumed after each kill, ends bit-identical to the uninterrupted run (CPU, same seed).
The full random campaign (>= 20 kills) is benchmarks/fault_injection.py."""
import signal

import reliability_harness as h

from goodfit.runner import resume


def test_three_kills_in_a_row_then_resume_is_bit_identical(tmp_path):
    ref, counts = h.reference(tmp_path / "ref")
    assert counts["step"] == 48 and counts["checkpoint"] >= 20  # 6 epochs x 8 steps; the points below exist
    root = tmp_path / "cut"
    train = ["train", h.RECIPE, *h.set_args(), "-q", "--out", root]
    # step 2: before the first checkpoint (every 3 steps): resume must start over from step 0
    assert h.killed(train, "step:2") == -signal.SIGKILL
    run_dir = h.only_run(root)
    assert not (run_dir / "checkpoints" / "last").exists()
    # each later kill lands in a resumed process, whose counters start at 0
    before = h.resume_point_step(run_dir)
    assert before == 0
    # inside the 4th checkpoint write: `last` moved to `prev`, the new one not yet renamed in
    assert h.killed(["resume", run_dir, "-q"], "checkpoint:4:swap") == -signal.SIGKILL
    ckpts = run_dir / "checkpoints"
    assert not (ckpts / "last").exists() and (ckpts / "prev").exists() and (ckpts / "last.tmp").exists()
    assert h.resume_point_step(run_dir) > before  # a kill never loses a checkpoint already written
    before = h.resume_point_step(run_dir)
    assert h.killed(["resume", run_dir, "-q"], "validation:3") == -signal.SIGKILL  # mid-validation
    assert h.resume_point_step(run_dir) >= before and not (run_dir / "test.json").exists()
    resume(run_dir, progress=False)
    assert h.differences(ref.dir, run_dir) == []
