"""The run directory's writers: checkpoints and metrics.jsonl, as loop callbacks."""
from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch

from goodfit.engine.checkpoint import rng_state, save_state_dicts, write_failed


def grad_norm(model: torch.nn.Module) -> float:
    """Global L2 norm of the current gradients (0 when there are none)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads).item() if grads else 0.0


class MetricsLog:
    """Appends one JSON object per event to metrics.jsonl (DESIGN §1.4).

    Step events every `log_every` steps are the only per-step host syncs (loss, grad norm).
    """

    def __init__(self, path: str | Path, log_every: int = 50, truncate_at: int | None = None, time_offset: float = 0.0):
        self.path = Path(path)
        if truncate_at is not None and self.path.exists():
            with open(self.path, "r+b") as f:  # drop events logged after the checkpoint we resume from
                f.truncate(truncate_at)
        self.file = open(self.path, "a")
        self.log_every = log_every
        self.time_offset = time_offset
        self.start = time.perf_counter()
        self.flushed = self.start

    def elapsed(self) -> float:
        return self.time_offset + time.perf_counter() - self.start

    def write(self, **event: Any) -> None:
        event.setdefault("time", round(self.elapsed(), 4))
        self.file.write(json.dumps(event) + "\n")

    def offset(self) -> int:
        self.file.flush()
        return self.file.tell()

    def on_step_end(self, trainer, state, loss: torch.Tensor) -> None:
        if state.step % self.log_every == 0:
            # the pre-clip norm when a clip measured it (what clipping acted on), else the norm now
            norm = state.grad_norm.item() if state.grad_norm is not None else grad_norm(trainer.model)
            self.write(kind="step", epoch=state.epoch + 1, step=state.step, split="train", loss=loss.item(),
                       lr=trainer.optimizer.param_groups[0]["lr"], grad_norm=norm)

    def on_validation_end(self, trainer, state, metrics: dict) -> None:
        self.write(kind="eval", epoch=state.epoch + 1, step=state.step, split="val", **metrics)

    def on_epoch_end(self, trainer, state, summary: dict) -> None:
        extra = {"clipped_fraction": summary["clipped_fraction"]} if "clipped_fraction" in summary else {}
        self.write(kind="epoch", epoch=summary["epoch"], step=state.step, split="train", loss=summary["train_loss"],
                   lr=summary["lr"], train_time=round(summary["train_time"], 4), **extra)
        now = time.perf_counter()
        if now - self.flushed > 1.0:  # readers tailing the file see each epoch within a second
            self.file.flush()
            self.flushed = now

    def on_fit_end(self, trainer, state) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class Checkpointer:
    """Writes checkpoints/last (keeping the one before as checkpoints/prev) and checkpoints/best, atomically.

    `last` is written after the first epoch, then at most every `interval` seconds (0: every
    epoch) and always after the final epoch; with `every_steps`, also mid-epoch. Each fsynced
    write costs milliseconds, which would dominate short epochs. `best` is snapshotted in
    memory when `tracker` (early stopping) sees an improvement and written just before the
    next `last`, so the pair on disk always agrees (or, after a divergence, at fit end: then
    `best` is newer than `last`, which resume handles). A non-finite loss or weight never
    overwrites either: the write is skipped (stopping the run is the divergence guard's job).
    state.json holds, besides the tensors' metadata: fit (FitState), rng, early_stopping,
    metrics_offset, time, schedule and grad_clip (`Trainer.extra_state()`), then `extra()`'s keys.
    """

    def __init__(self, folder: str | Path, tracker=None, log: MetricsLog | None = None,
                 every_steps: int | None = None, interval: float = 10.0, extra: Callable[[], dict] | None = None):
        self.folder = Path(folder)
        self.tracker, self.log, self.every_steps, self.interval, self.extra = tracker, log, every_steps, interval, extra
        self.last_write: float | None = None
        self.pending_best: tuple | None = None

    def state(self, trainer, state) -> dict[str, Any]:
        try:
            offset = self.log.offset() if self.log else None  # flushes the log: a full disk fails here first
        except OSError as e:
            raise write_failed(self.log.path, e) from None
        doc = {"fit": state.to_json(), "rng": rng_state(),
               "early_stopping": self.tracker.state_dict() if self.tracker else None,
               "metrics_offset": offset,
               "time": self.log.elapsed() if self.log else None,
               **trainer.extra_state()}  # "schedule" (plateau) and "grad_clip" (AutoClip) states, or None
        if self.extra is not None:
            doc.update(self.extra())
        return doc

    def snapshot(self, trainer, state) -> tuple:
        model_sd = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        return model_sd, copy.deepcopy(trainer.optimizer.state_dict()), self.state(trainer, state)

    def flush(self, trainer, state) -> None:
        self._write_best()
        if not (finite(trainer.model.state_dict().values()) and finite(state.epoch_losses)):
            return  # never replace a good `last` by a diverged state
        save_state_dicts(self.folder / "last", trainer.model.state_dict(), trainer.optimizer.state_dict(),
                         self.state(trainer, state), previous="prev")
        self.last_write = time.monotonic()

    def _write_best(self) -> None:
        if self.pending_best is not None:
            save_state_dicts(self.folder / "best", *self.pending_best)
            self.pending_best = None

    def on_step_end(self, trainer, state, loss) -> None:
        if self.every_steps and state.step % self.every_steps == 0 and state.batch_in_epoch < len(trainer.train_loader):
            self.flush(trainer, state)

    def on_epoch_end(self, trainer, state, summary) -> None:
        if not math.isfinite(summary["train_loss"]):
            return
        if self.tracker is not None and self.tracker.improved and finite(trainer.model.state_dict().values()):
            self.pending_best = self.snapshot(trainer, state)
        final = state.should_stop or state.epoch >= trainer.epochs
        due = self.last_write is None or time.monotonic() - self.last_write >= self.interval
        if final or due:
            self.flush(trainer, state)

    def on_fit_end(self, trainer, state) -> None:
        # a run stopped by a divergence still delivers the best model it found before
        self._write_best()


def finite(tensors) -> bool:
    """True when every floating-point value in `tensors` is finite (one host sync)."""
    flags = [torch.isfinite(t).all() for t in tensors if t.is_floating_point() or t.is_complex()]
    return bool(torch.stack(flags).all()) if flags else True
