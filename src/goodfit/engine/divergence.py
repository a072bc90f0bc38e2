"""The divergence guard: stops a fit at the first non-finite training loss, without a per-step host sync.

The loop keeps each step's loss on the device (state.epoch_losses); the guard looks at the
losses added since its last look every `every` optimizer steps (the logging interval, where
the log syncs anyway) and at the last step of each epoch: one `isfinite` over a stacked
tensor, one sync. So a NaN/Inf is detected at most `every` steps (or the rest of the epoch)
after it appeared, and the step it appeared at is still reported exactly. Put the guard last
among the callbacks, so that a callback which repairs a divergence in flight (the doctor with
auto_repair) acts first.
"""
from __future__ import annotations

import math

import torch


class DivergenceGuard:
    """Sets `state.should_stop` with stop_reason "diverged"; `first_step` is the step whose loss was non-finite."""

    def __init__(self, every: int = 50):
        self.every = max(1, every)
        self.first_step: int | None = None
        self._losses: list | None = None  # the epoch_losses list looked at, and how far
        self._seen = 0

    def on_step_end(self, trainer, state, loss) -> None:
        end_of_epoch = state.batch_in_epoch >= len(trainer.train_loader)
        if state.step % self.every and not end_of_epoch:
            return
        losses = state.epoch_losses
        if losses is not self._losses or self._seen > len(losses):  # a new epoch, or a repair pruned the list
            self._losses, self._seen = losses, 0
        fresh = losses[self._seen:]
        self._seen = len(losses)
        if not fresh:
            return
        bad = ~torch.isfinite(torch.stack(fresh).reshape(len(fresh), -1).float()).all(dim=1)
        if not bad.any():
            return
        # losses[i] is micro-batch b (1-based) of this epoch; its optimizer step is ceil(b / accumulate)
        acc = max(1, getattr(trainer, "accumulate", 1))
        b = state.batch_in_epoch - len(losses) + (len(losses) - len(fresh)) + int(bad.nonzero()[0]) + 1
        self.first_step = state.step - math.ceil(state.batch_in_epoch / acc) + math.ceil(b / acc)
        state.should_stop, state.stop_reason = True, "diverged"

    def on_epoch_end(self, trainer, state, summary) -> None:
        if self.first_step is not None:
            summary.setdefault("nonfinite_step", self.first_step)  # in the history: where it went wrong
