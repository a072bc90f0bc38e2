"""Helpers shared by the accumulators: the accumulation dtype and the single host sync."""
from __future__ import annotations

import torch
from torch import Tensor


def acc_dtype(device: torch.device) -> torch.dtype:
    """float64 for running sums, except where the backend has no float64 (Apple MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def to_host(values: dict[str, Tensor]) -> dict[str, float]:
    """Move scalar device tensors to Python floats in one transfer (one sync, not one per value)."""
    if not values:
        return {}
    stacked = torch.stack([v.reshape(()).to(acc_dtype(v.device)) for v in values.values()])
    return dict(zip(values, stacked.tolist()))
