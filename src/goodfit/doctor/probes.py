"""Pre-flight probes: quick experiments on the real model that catch broken set-ups before a
long run. "Overfit one batch" (Karpathy, "A Recipe for Training Neural Networks", 2019): a
correct model, loss and optimizer can drive the loss on a single small batch close to zero;
if they cannot, something is wired wrong (labels, loss, a frozen layer, a too small LR)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from goodfit.optim.restore import snapshot


@dataclass
class OverfitResult:
    passed: bool
    initial_loss: float
    final_loss: float     # the lowest loss reached
    target: float         # passed when final_loss <= target = ratio × initial_loss
    steps: int            # steps taken (it stops as soon as the target is reached)
    losses: list[float]


def overfit_one_batch(model: nn.Module, loss_fn, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                      *, steps: int = 300, ratio: float = 0.05) -> OverfitResult:
    """Train on the one batch (x, y) for up to `steps` steps; pass if the loss falls to `ratio`×
    its initial value. Dropout is off during the probe (it fights memorization by design);
    batch norm uses batch statistics, as in training. Model, optimizer and RNGs are restored."""
    if steps < 1 or not 0 < ratio < 1:
        raise ValueError(f"need steps >= 1 and 0 < ratio < 1, got {steps} and {ratio}")
    restore = snapshot(model, optimizer)
    losses: list[float] = []
    try:
        model.train()
        for m in model.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.eval()
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if not torch.isfinite(loss) or losses[-1] <= ratio * losses[0]:
                break
    finally:
        restore()
    finite = [v for v in losses if v == v and abs(v) != float("inf")]
    best = min(finite) if finite else float("nan")
    target = ratio * losses[0]
    return OverfitResult(passed=bool(finite) and best <= target, initial_loss=losses[0], final_loss=best,
                         target=target, steps=len(losses), losses=losses)
