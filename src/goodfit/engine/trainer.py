"""Trainer: the objects a fit needs, held together. Plain PyTorch objects in, plain out."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from goodfit.engine.evaluate import LossOnly
from goodfit.engine.loop import FitState, fit
from goodfit.optim.schedules import constant


def _no_metrics():
    return LossOnly()


@dataclass
class Trainer:
    """model, loss_fn, optimizer and loaders in; `fit()` trains and returns the FitState.

    `train_loader`/`val_loader` are anything with `epoch(epoch, start=0)` yielding (x, y)
    batches and `__len__` (goodfit.data.TensorLoader). `schedule(step, total, warmup=, min_lr=)`
    returns a multiplier of each group's initial LR. `callbacks` receive the five events.
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
    make_metrics: Callable = _no_metrics
    callbacks: list = field(default_factory=list)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"
    clip: Callable | None = None
    penalty: Callable | None = None
    augment: Callable | None = None
    accumulate: int = 1  # micro-batches per optimizer step (gradient accumulation)

    def fit(self, state: FitState | None = None) -> FitState:
        return fit(self, state)
