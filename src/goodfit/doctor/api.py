"""`goodfit.Doctor`: the doctor for any training loop (yours, Lightning's, goodfit's).

    doctor = goodfit.Doctor(model, optimizer, task="classification", num_classes=10)
    for epoch in range(epochs):
        for x, y in loader:
            optimizer.zero_grad(); loss = loss_fn(model(x), y); loss.backward(); optimizer.step()
            doctor.step(loss)                       # after optimizer.step()
        doctor.epoch(train_loss=..., val_loss=...)  # once per epoch, after validation
    print(doctor.report())                          # a goodfit.doctor.Diagnosis

It attaches nothing until its first sampled step and never changes the training unless
`auto_repair=True`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from goodfit.doctor.callback import DoctorCallback
from goodfit.doctor.findings import Diagnosis
from goodfit.doctor.rules import Context


@dataclass
class _Loop:
    """The attributes of a goodfit Trainer / FitState that the doctor reads, for a foreign loop."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    steps_per_epoch: int | None
    accumulate: int = 1
    clip: Any = None
    callbacks: list = field(default_factory=list)
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    should_stop: bool = False
    stop_reason: str | None = None
    history: list = field(default_factory=list)
    epoch_losses: list = field(default_factory=list)

    @property
    def train_loader(self):
        return range(self.steps_per_epoch or 1)


class Doctor:
    """Watch a hand-written training loop: call `step(loss)` after each optimizer step and
    `epoch(train_loss=, val_loss=, **metrics)` after each epoch; `report()` gives the Diagnosis."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, task: str = "classification",
                 num_classes: int | None = None, every: int = 100, steps_per_epoch: int | None = None,
                 auto_repair: bool = False, restore_best: bool = False):
        lr = optimizer.param_groups[0]["lr"]
        device = next(model.parameters()).device
        self._loop = _Loop(model, optimizer, device, steps_per_epoch)
        self.callback = DoctorCallback(Context(task=task, num_classes=num_classes, lr=lr, restore_best=restore_best,
                                               steps_per_epoch=steps_per_epoch), every=every, auto_repair=auto_repair)
        self.callback.on_fit_start(self._loop, self._loop)

    @property
    def should_stop(self) -> bool:
        """True once the doctor saw the loss diverge (without auto_repair): stop training."""
        return self._loop.should_stop

    def step(self, loss: torch.Tensor | float) -> None:
        """Report one optimizer step's loss (call after optimizer.step())."""
        loop = self._loop
        loss = loss.detach() if isinstance(loss, torch.Tensor) else torch.tensor(float(loss))
        loop.step += 1
        loop.batch_in_epoch += 1
        loop.epoch_losses.append(loss)
        self.callback.on_step_end(loop, loop, loss)

    def epoch(self, train_loss: float | None = None, val_loss: float | None = None, **metrics: float) -> None:
        """Report the end of an epoch: its mean training loss (default: the mean of its steps) and validation."""
        loop = self._loop
        if train_loss is None:
            losses = [float(v) for v in loop.epoch_losses]
            train_loss = sum(losses) / len(losses) if losses else math.nan
        loop.epoch += 1
        loop.batch_in_epoch = 0
        loop.epoch_losses = []
        summary = {"epoch": loop.epoch, "step": loop.step, "train_loss": float(train_loss)}
        if val_loss is not None:
            summary["val_loss"] = float(val_loss)
        summary.update({f"val_{k}": float(v) for k, v in metrics.items()})
        loop.history.append(summary)
        self.callback.on_epoch_end(loop, loop, summary)

    def report(self) -> Diagnosis:
        """The diagnosis of everything reported so far."""
        self.callback._flush()
        best = None
        if self._loop.history and "val_loss" in self._loop.history[0] and self.callback.ctx.restore_best:
            best = 1 + min(range(len(self._loop.history)), key=lambda i: self._loop.history[i]["val_loss"])
        self.callback.diagnosis = self.callback.diagnose(self._loop.history, best)
        return self.callback.diagnosis

    def close(self) -> None:
        """Remove any hook still attached."""
        if self.callback.monitor is not None:
            self.callback.monitor.disarm()
