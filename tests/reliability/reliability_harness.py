"""Shared by tests/reliability and benchmarks/fault_injection.py: a small run, kills at chosen points,
corruptions, and the comparison with an uninterrupted run.

Kill points (each a SIGKILL, so nothing is flushed or cleaned up):
  step:N               before the Nth optimizer step of the process (after its backward)
  validation:N         at the Nth module forward under no_grad in eval mode (mid-validation)
  checkpoint:N:STAGE   inside the Nth checkpoint write (GOODFIT_FAULT, goodfit.engine.checkpoint):
                       partial | written | swap
  timing:SECONDS       SECONDS after the run directory's metrics.jsonl appeared (wherever that lands)
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.nn.modules.module import register_module_forward_pre_hook
from torch.optim.optimizer import register_optimizer_step_pre_hook
from safetensors.torch import load_file

RECIPE = "wine-mlp"
# 8 steps/epoch, a mid-epoch checkpoint every 3 steps, every epoch end checkpointed, dropout (RNG) on
OVERRIDES = ["train.epochs=6", "train.batch_size=16", "train.checkpoint_every=3", "train.checkpoint_interval=0",
             "train.log_every=2", "model.dropout=0.2", "train.early_stopping.patience=null", "train.threads=1"]
STAGES = ("partial", "written", "swap")

# the child process: installs the step / validation kill hooks (torch's global hooks), then runs the CLI
CHILD = r"""
import os, signal, sys
import torch
from torch.nn.modules.module import register_module_forward_pre_hook
from torch.optim.optimizer import register_optimizer_step_pre_hook
import torch.optim.optimizer  # noqa: F401 - the global step hooks live there
kind, n = os.environ.get("GOODFIT_TEST_KILL", "none:0").split(":")
n, seen = int(n), [0]
def hit():
    seen[0] += 1
    if seen[0] == n:
        os.kill(os.getpid(), signal.SIGKILL)
if kind == "step":
    register_optimizer_step_pre_hook(lambda opt, args, kwargs: hit())
elif kind == "validation":
    register_module_forward_pre_hook(
        lambda m, inp: hit() if not m.training and not torch.is_grad_enabled() else None)
from goodfit.cli import main
sys.argv[0] = "goodfit"
main()
"""


def env(extra: dict | None = None) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in ("GOODFIT_FAULT", "GOODFIT_TEST_KILL")}
    return {**base, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0", **(extra or {})}


def set_args(overrides=OVERRIDES) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def only_run(root: Path) -> Path:
    (d,) = [p for p in (root / RECIPE).iterdir() if p.is_dir()]
    return d


class Counter:
    """In-process: counts what the kill points count, over one fit (not the final test evaluation)."""

    def __init__(self):
        from goodfit.engine import checkpoint

        self.checkpoint = checkpoint
        self.steps = self.validation = 0
        self.at_end: dict[str, int] = {}
        self._writes0 = checkpoint._writes
        self._handles = [
            register_optimizer_step_pre_hook(lambda *a: self._add("steps")),
            register_module_forward_pre_hook(
                lambda m, i: self._add("validation") if not m.training and not torch.is_grad_enabled() else None)]

    def _add(self, what: str) -> None:
        setattr(self, what, getattr(self, what) + 1)

    def on_fit_end(self, trainer, state) -> None:
        self.at_end = {"step": self.steps, "validation": self.validation,
                       "checkpoint": self.checkpoint._writes - self._writes0}

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def reference(root: Path, overrides=OVERRIDES):
    """The uninterrupted run, in this process; returns (run, counts of each kill point over the fit)."""
    import goodfit

    counter = Counter()
    try:
        run = goodfit.run(RECIPE, list(overrides), out=root, progress=False, callbacks=[counter])
    finally:
        counter.close()
    return run, counter.at_end


def killed(args: list, point: str, timeout: float = 300) -> int:
    """Run `goodfit ARGS` in a child killed at `point` (see the module doc); returns its exit status."""
    kind, _, rest = point.partition(":")
    extra = {}
    if kind == "checkpoint":
        n, _, stage = rest.partition(":")
        extra["GOODFIT_FAULT"] = f"kill_in_checkpoint:{n}:{stage or 'written'}"
    elif kind in ("step", "validation"):
        extra["GOODFIT_TEST_KILL"] = point
    proc = subprocess.Popen([sys.executable, "-c", CHILD, *map(str, args)], env=env(extra),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if kind == "timing":  # a train process: the clock starts when training does
        out = Path(args[args.index("--out") + 1])
        while proc.poll() is None and not list(out.glob("*/*/metrics.jsonl")):
            time.sleep(0.005)
        try:
            proc.wait(timeout=float(rest))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"goodfit {args[0]} failed ({proc.returncode}) under {point}: {err.decode()[-2000:]}")
    return proc.returncode


def resume_cli(run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "goodfit", "resume", str(run_dir), "-q"], env=env(),
                          capture_output=True, text=True)


def weights(run_dir: Path, which: str) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoints" / which / "model.safetensors"))


def events(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("time", "train_time")} for r in rows]


def differences(ref: Path, run_dir: Path) -> list[str]:
    """What differs between two finished run directories: final weights (bit for bit), log events, test metrics."""
    out = []
    for which in ("last", "best"):
        a, b = weights(ref, which), weights(run_dir, which)
        if a.keys() != b.keys() or not all(torch.equal(a[k], b[k]) for k in a):
            out.append(f"{which} weights")
    if events(ref) != events(run_dir):
        out.append("metrics.jsonl events")
    test = [json.loads((d / "test.json").read_text())["metrics"] for d in (ref, run_dir)]
    if test[0] != test[1]:
        out.append("test metrics")
    return out


def resume_point_step(run_dir: Path) -> int:
    """The step the next resume starts from (0 when no checkpoint verifies)."""
    from goodfit.engine.checkpoint import CorruptCheckpoint, read_checkpoint

    for name in ("last", "prev"):
        try:
            return read_checkpoint(run_dir / "checkpoints" / name)[2]["fit"]["step"]
        except CorruptCheckpoint:
            continue
    return 0


def random_point(rng: random.Random, counts: dict[str, int], done_steps: int = 0) -> str:
    """A kill point drawn uniformly over kinds, then over that kind's occurrences in what remains of the run."""
    total_steps = counts["step"]
    left = max(1, total_steps - done_steps)
    share = left / total_steps
    kind = rng.choice(["step", "validation", "checkpoint", "checkpoint", *(["timing"] if not done_steps else [])])
    if kind == "step":
        return f"step:{rng.randint(1, left)}"
    if kind == "validation":
        return f"validation:{rng.randint(1, max(1, int(counts['validation'] * share)))}"
    if kind == "checkpoint":
        return f"checkpoint:{rng.randint(1, max(1, int(counts['checkpoint'] * share)))}:{rng.choice(STAGES)}"
    return f"timing:{rng.uniform(0.0, 1.0):.3f}"  # the reference trains for about a second


# ---------------------------------------------------------------- corruption

def flip_bit(path: Path, rng: random.Random) -> str:
    data = bytearray(path.read_bytes())
    i = rng.randrange(len(data))
    data[i] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))
    return f"bit flip at byte {i} of {path.name}"


def truncate(path: Path, rng: random.Random) -> str:
    size = path.stat().st_size
    keep = rng.randrange(size)
    with open(path, "r+b") as f:
        f.truncate(keep)
    return f"{path.name} truncated to {keep} of {size} bytes"

