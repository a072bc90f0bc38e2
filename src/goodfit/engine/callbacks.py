"""The run directory's writers: checkpoints and metrics.jsonl, as loop callbacks."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch

from goodfit.engine.checkpoint import rng_state, save_checkpoint


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
            self.write(kind="step", epoch=state.epoch + 1, step=state.step, split="train", loss=loss.item(),
                       lr=trainer.optimizer.param_groups[0]["lr"], grad_norm=grad_norm(trainer.model))

    def on_validation_end(self, trainer, state, metrics: dict) -> None:
        self.write(kind="eval", epoch=state.epoch + 1, step=state.step, split="val", **metrics)

    def on_epoch_end(self, trainer, state, summary: dict) -> None:
        self.write(kind="epoch", epoch=summary["epoch"], step=state.step, split="train", loss=summary["train_loss"],
                   lr=summary["lr"], train_time=round(summary["train_time"], 4))
        self.file.flush()

    def on_fit_end(self, trainer, state) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class Checkpointer:
    """Writes checkpoints/last after every epoch (and every `every_steps` steps if set) and
    checkpoints/best when `tracker` (early stopping) saw an improvement. A non-finite
    training loss never overwrites a checkpoint."""

    def __init__(self, folder: str | Path, tracker=None, log: MetricsLog | None = None,
                 every_steps: int | None = None, extra: Callable[[], dict] | None = None):
        self.folder = Path(folder)
        self.tracker, self.log, self.every_steps, self.extra = tracker, log, every_steps, extra

    def state(self, trainer, state) -> dict[str, Any]:
        doc = {"fit": state.to_json(), "rng": rng_state(),
               "early_stopping": self.tracker.state_dict() if self.tracker else None,
               "metrics_offset": self.log.offset() if self.log else None,
               "time": self.log.elapsed() if self.log else None}
        if self.extra is not None:
            doc.update(self.extra())
        return doc

    def write(self, name: str, trainer, state) -> None:
        save_checkpoint(self.folder / name, trainer.model, trainer.optimizer, self.state(trainer, state))

    def on_step_end(self, trainer, state, loss) -> None:
        if self.every_steps and state.step % self.every_steps == 0 and state.batch_in_epoch < len(trainer.train_loader):
            if torch.isfinite(loss):
                self.write("last", trainer, state)

    def on_epoch_end(self, trainer, state, summary) -> None:
        if not math.isfinite(summary["train_loss"]):
            return
        self.write("last", trainer, state)
        if self.tracker is not None and self.tracker.improved:
            self.write("best", trainer, state)
