"""Evaluation of a model on a loader: mean loss per sample and the task's metrics, one host sync."""
from __future__ import annotations

import contextlib

import torch


class LossOnly:
    """The metric accumulator of a fit with no metrics: validation reports the loss alone."""

    def update(self, output, target) -> None:
        pass

    def compute(self) -> dict[str, float]:
        return {}


@torch.no_grad()
def evaluate(model, loss_fn, loader, metrics, device: torch.device, precision: str = "fp32") -> dict[str, float]:
    """{'loss': mean loss over samples, **metrics} with the model in eval mode (restored afterwards)."""
    was_training = model.training
    model.eval()
    sums = []  # per-batch loss sums, reduced once: no host sync inside the loop
    count = 0
    ctx = (contextlib.nullcontext() if precision == "fp32" else
           torch.autocast(device_type=device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16))
    try:
        for x, y in loader.epoch(0):
            with ctx:
                out = model(x)
            out = out.float()
            sums.append(loss_fn(out, y).double() * len(x))
            count += len(x)
            metrics.update(out, y)
    finally:
        model.train(was_training)
    total = sums[0] if len(sums) == 1 else torch.stack(sums).sum()
    result = {"loss": total.item() / count if count else float("nan")}
    result.update(metrics.compute())
    return result
