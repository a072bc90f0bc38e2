"""Trainer: the objects a fit needs, held together. Plain PyTorch objects in, plain out."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from goodfit.engine.evaluate import LossOnly
from goodfit.engine.loop import FitState, fit
from goodfit.optim.schedules import ReduceOnPlateau, constant


def _no_metrics():
    return LossOnly()


@dataclass
class Trainer:
    """model, loss_fn, optimizer and loaders in; `fit()` trains and returns the FitState.

    `train_loader`/`val_loader` are anything with `epoch(epoch, start=0)` yielding (x, y)
    batches and `__len__` (goodfit.data.TensorLoader). `schedule(step, total, warmup=, min_lr=)`
    returns a multiplier of each group's initial LR, evaluated per optimizer step
    (`interval="step"`) or, counting epochs, once per epoch (`interval="epoch"`: step sizes,
    milestones and `warmup_epochs` are then in epochs). `momentum(step, total, warmup=, min_lr=)`,
    if given, sets each group's momentum / beta1 at the same position (1cycle). `plateau`
    (ReduceOnPlateau) multiplies the schedule and is stepped with the epoch summary's
    `plateau.monitor` value after validation. `callbacks` receive the five events.
    `clip(params)` returns (pre-clip norm, clipped) (goodfit.optim.clipping). With `accumulate`
    = k, k micro-batches' gradients (each loss divided by k) make one optimizer step.
    """

    model: nn.Module
    loss_fn: Callable
    optimizer: torch.optim.Optimizer
    train_loader: Any
    val_loader: Any = None
    epochs: int = 1
    schedule: Callable = constant
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    interval: str = "step"  # "step" | "epoch": what the schedule's step argument counts
    momentum: Callable | None = None
    plateau: ReduceOnPlateau | None = None
    make_metrics: Callable = _no_metrics
    callbacks: list = field(default_factory=list)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"
    clip: Callable | None = None
    penalty: Callable | None = None
    augment: Callable | None = None
    mix: Callable | None = None  # (x, y) -> (x, soft targets) per training batch: mixup / cutmix (goodfit.nn.mixup)
    accumulate: int = 1  # micro-batches per optimizer step (gradient accumulation)

    def fit(self, state: FitState | None = None) -> FitState:
        return fit(self, state)

    def extra_state(self) -> dict[str, Any]:
        """JSON state of the stateful parts beyond model and optimizer: the plateau schedule and an
        adaptive clip (AutoClip's norm history); None where the part keeps no state."""
        return {"schedule": self.plateau.state_dict() if self.plateau is not None else None,
                "grad_clip": self.clip.state_dict() if hasattr(self.clip, "state_dict") else None}

    def load_extra_state(self, doc: dict[str, Any]) -> None:
        """Restore `extra_state()`; a key missing from `doc` (an older checkpoint) leaves that part fresh."""
        if doc.get("schedule") is not None and self.plateau is not None:
            self.plateau.load_state_dict(doc["schedule"])
        if doc.get("grad_clip") is not None and hasattr(self.clip, "load_state_dict"):
            self.clip.load_state_dict(doc["grad_clip"])
