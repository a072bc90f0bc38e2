"""Helpers shared by the accumulators: the accumulation dtype, the single host sync, and the
collectives that combine accumulators across processes (torch.distributed, when initialized)."""
from __future__ import annotations

import torch
import torch.distributed as dist
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


def distributed(group=None) -> bool:
    """Whether torch.distributed is initialized with more than one process in `group`."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def all_reduce_sum(flat: Tensor, group=None) -> Tensor:
    """The element-wise sum of `flat` over the processes of `group` (one all_reduce)."""
    flat = flat.clone()
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    return flat


def all_gather(flat: Tensor, group=None) -> list[Tensor]:
    """Every process's `flat` (equal lengths), in rank order (one all_gather)."""
    parts = [torch.empty_like(flat) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, flat.contiguous(), group=group)
    return parts


def all_gather_varlen(flat: Tensor, group=None) -> list[Tensor]:
    """Every process's 1-D `flat`, of any length, in rank order.

    A tiny all_gather of the lengths, then one all_gather of the data padded to the longest.
    """
    n = torch.tensor([flat.numel()], dtype=torch.int64, device=flat.device)
    lengths = [int(v) for v in torch.cat(all_gather(n, group)).tolist()]
    padded = torch.zeros(max(lengths), dtype=flat.dtype, device=flat.device)
    padded[: flat.numel()] = flat
    return [part[:length] for part, length in zip(all_gather(padded, group), lengths)]
