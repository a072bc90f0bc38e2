"""L1 / L2 penalties added to the loss (as opposed to decoupled weight decay in the optimizer)."""
from __future__ import annotations

import torch


class WeightPenalty:
    """l1·Σ|w| + (l2/2)·Σw² over the given parameters; the l2/2 makes its gradient l2·w,
    so SGD with this penalty takes the same steps as SGD with weight_decay=l2."""

    def __init__(self, params, l1: float = 0.0, l2: float = 0.0):
        self.params = list(params)
        self.l1, self.l2 = l1, l2

    def __call__(self, model=None) -> torch.Tensor:
        total = 0.0
        if self.l1:
            total = total + self.l1 * sum(p.abs().sum() for p in self.params)
        if self.l2:
            total = total + 0.5 * self.l2 * sum(p.pow(2).sum() for p in self.params)
        return total
