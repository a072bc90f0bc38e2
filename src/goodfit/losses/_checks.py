"""Input checks the loss functions share: shapes, dtypes, value ranges, reductions.

Every failed check is a `ValueError` that names the loss, the expected shape, dtype or range and
what arrived. Shape and dtype checks are free; checks on tensor *values* (class indices in range,
targets in [0, 1]) run only on CPU tensors, because on an accelerator they would cost a host sync
every step (DESIGN §3, fast by construction); there torch's own device-side asserts are the guard.

Hand-written losses compute in at least float32 (`working_dtype`) and return that dtype, as torch's
losses do under autocast; float64 inputs stay float64.
"""
from __future__ import annotations

import torch
from torch import Tensor

REDUCTIONS = ("mean", "sum", "none")


def is_number(value) -> bool:
    """A real number, not a bool (YAML `true` is not a smoothing factor)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def shape(t: Tensor) -> tuple[int, ...]:
    """The tensor's shape as a plain tuple, for messages."""
    return tuple(t.shape)


def on_host(t: Tensor) -> bool:
    """Whether checking `t`'s values costs no device sync."""
    return t.device.type == "cpu"


def check_reduction(name: str, reduction: str) -> None:
    """ValueError unless `reduction` is mean, sum or none."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"{name}: reduction must be one of mean, sum, none, got {reduction!r}")


def reduce(name: str, values: Tensor, reduction: str) -> Tensor:
    """`values` averaged, summed, or returned as they are."""
    check_reduction(name, reduction)
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def check_number(name: str, key: str, value, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False) -> float:
    """ValueError unless `value` is a real number in the stated interval."""
    ok = is_number(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "" if high is None else f"{high:g}" + (")" if high_open else "]")
        where = (f"in {lo}, {hi}" if low is not None and high is not None
                 else f"{'>' if low_open else '>='} {low:g}" if low is not None
                 else f"{'<' if high_open else '<='} {high:g}")
        raise ValueError(f"{name}: {key} must be a number {where}, got {value!r}")
    return float(value)


def check_float(name: str, what: str, t: Tensor) -> None:
    """ValueError unless `t` is a floating-point tensor (logits, predictions, embeddings)."""
    if not isinstance(t, Tensor):
        raise ValueError(f"{name}: {what} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"{name}: {what} must be a floating-point tensor, got dtype {t.dtype}")


def check_integer(name: str, what: str, t: Tensor) -> None:
    """ValueError unless `t` holds integers (class indices, masks, token ids)."""
    if not isinstance(t, Tensor):
        raise ValueError(f"{name}: {what} must be a torch.Tensor, got {type(t).__name__}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name}: {what} must be an integer tensor (class indices), got dtype {t.dtype}")


def check_ndim(name: str, what: str, t: Tensor, ndim: int, layout: str) -> None:
    """ValueError unless `t` has `ndim` dimensions, naming the expected `layout` such as (N, D)."""
    if t.ndim != ndim:
        raise ValueError(f"{name}: {what} must have shape {layout}, got {shape(t)}")


def check_classes(name: str, target: Tensor, num_classes: int, ignore_index: int | None = None) -> None:
    """ValueError unless every class index lies in [0, num_classes) (or equals ignore_index)."""
    if not on_host(target) or target.numel() == 0:
        return
    bad = (target < 0) | (target >= num_classes)
    if ignore_index is not None:
        bad &= target != ignore_index
    if bool(bad.any()):
        value = int(target[bad][0])
        extra = "" if ignore_index is None else f" (or ignore_index={ignore_index})"
        raise ValueError(f"{name}: class indices must lie in [0, {num_classes - 1}]{extra}, found {value}")


def check_unit_interval(name: str, what: str, t: Tensor, valid: Tensor | None = None) -> None:
    """ValueError unless every value of `t` (where `valid`) lies in [0, 1]."""
    if not on_host(t) or t.numel() == 0:
        return
    values = t if valid is None else t[valid]
    if values.numel() and bool(((values < 0) | (values > 1)).any()):
        raise ValueError(f"{name}: {what} must lie in [0, 1], found values in "
                         f"[{float(values.min()):g}, {float(values.max()):g}]")


def match_shape(name: str, output: Tensor, target: Tensor) -> Tensor:
    """The target reshaped to the output's shape when they differ only by a channel of size 1:
    (N,) with (N, 1), and (N, *) with (N, 1, *) as binary segmentation masks come."""
    if not isinstance(target, Tensor):
        raise ValueError(f"{name}: target must be a torch.Tensor, got {type(target).__name__}")
    if output.shape == target.shape:
        return target
    if (output.ndim >= 2 and output.shape[1] == 1 and target.ndim == output.ndim - 1
            and target.shape[0] == output.shape[0] and target.shape[1:] == output.shape[2:]):
        return target.unsqueeze(1)
    if output.ndim == 1 and target.ndim == 2 and target.shape == (output.shape[0], 1):
        return target.reshape(-1)
    raise ValueError(f"{name}: output of shape {shape(output)} needs a target of the same shape "
                     f"(or (N,) with (N, 1)), got {shape(target)}")


def working_dtype(t: Tensor) -> Tensor:
    """`t` in at least float32, so hand-written losses do not accumulate in half precision."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
