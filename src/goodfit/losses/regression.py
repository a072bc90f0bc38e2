"""Regression losses: MSE, MAE, Huber, Smooth-L1, log-cosh, quantile (pinball).

Predictions and targets have the same shape, except that (N,) and (N, 1) are matched to each
other (never broadcast to (N, N)); the quantile loss also takes (N, Q) predictions for Q quantiles.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from goodfit.losses._checks import (check_float, check_number, check_reduction, is_number, match_shape, reduce,
                                    shape, working_dtype)

__all__ = ["mse", "mae", "l1", "huber", "smooth_l1", "log_cosh", "quantile", "pinball"]


def _target(name: str, pred: Tensor, target: Tensor, reduction: str) -> Tensor:
    """The target matched to the prediction's shape and dtype."""
    check_reduction(name, reduction)
    check_float(name, "prediction", pred)
    target = match_shape(name, pred, target)
    if target.is_complex():
        raise ValueError(f"{name}: target must be real numbers, got dtype {target.dtype}")
    return target.to(pred.dtype)


def mse(pred: Tensor, target: Tensor, *, reduction: str = "mean") -> Tensor:
    """Mean squared error (y − ŷ)²; (N,) and (N, 1) are matched to each other."""
    return F.mse_loss(pred, _target("mse", pred, target, reduction), reduction=reduction)


def mae(pred: Tensor, target: Tensor, *, reduction: str = "mean") -> Tensor:
    """Mean absolute error |y − ŷ| (registered as `mae` and `l1`); its minimizer is the median."""
    return F.l1_loss(pred, _target("mae", pred, target, reduction), reduction=reduction)


l1 = mae  # the name goodfit used first


def huber(pred: Tensor, target: Tensor, *, delta: float = 1.0, reduction: str = "mean") -> Tensor:
    """Huber loss: ½e² for |e| ≤ δ, δ(|e| − ½δ) above, so outliers pull less than with MSE."""
    check_number("huber", "delta", delta, 0, low_open=True)
    return F.huber_loss(pred, _target("huber", pred, target, reduction), delta=delta, reduction=reduction)


def smooth_l1(pred: Tensor, target: Tensor, *, beta: float = 1.0, reduction: str = "mean") -> Tensor:
    """Smooth-L1: ½e²/β for |e| < β, |e| − ½β above (= huber(δ=β) / β; β = 0 is MAE)."""
    check_number("smooth_l1", "beta", beta, 0)
    return F.smooth_l1_loss(pred, _target("smooth_l1", pred, target, reduction), beta=beta, reduction=reduction)


def log_cosh(pred: Tensor, target: Tensor, *, reduction: str = "mean") -> Tensor:
    """log cosh(ŷ − y): ≈ ½e² for small errors, ≈ |e| − log 2 for large ones; gradient tanh(e).

    Computed as e + softplus(−2e) − log 2, which never overflows (cosh does for |e| > ~89 in float32).
    """
    target = _target("log_cosh", pred, target, reduction)
    e = working_dtype(pred) - working_dtype(target)
    return reduce("log_cosh", e + F.softplus(-2 * e) - math.log(2), reduction)


def _taus(tau) -> list[float]:
    """The quantile levels as a list, each in (0, 1)."""
    values = [tau] if is_number(tau) else list(tau) if isinstance(tau, (list, tuple)) else None
    if isinstance(tau, Tensor):
        values = tau.reshape(-1).tolist()
    if not values or not all(is_number(t) and 0 < t < 1 for t in values):
        raise ValueError(f"quantile: tau must be a number in (0, 1) or a list of them (one per column), got {tau!r}")
    return [float(t) for t in values]


def quantile(pred: Tensor, target: Tensor, *, tau=0.5, reduction: str = "mean") -> Tensor:
    """Pinball loss ρ_τ(u) = max(τ·u, (τ − 1)·u) with u = y − ŷ; its minimizer is the τ-quantile of y.

    One τ: `pred` and `target` of the same shape ((N,) / (N, 1) matched). Q levels at once,
    tau = [τ_1 … τ_Q]: `pred` (N, Q), column q predicting quantile τ_q, and `target` (N,) or (N, 1).
    The mean is over all N·Q terms; `none` gives them in `pred`'s shape. Registered also as `pinball`.
    """
    taus = _taus(tau)
    check_reduction("quantile", reduction)
    check_float("quantile", "prediction", pred)
    if len(taus) == 1:
        target = match_shape("quantile", pred, target)
    else:
        q = len(taus)
        if pred.ndim != 2 or pred.shape[1] != q:
            raise ValueError(f"quantile: with {q} quantile levels the prediction must have shape (N, {q}), "
                             f"got {shape(pred)}")
        if target.shape not in ((pred.shape[0],), (pred.shape[0], 1)):
            raise ValueError(f"quantile: with {q} quantile levels the target must have shape "
                             f"({pred.shape[0]},) or ({pred.shape[0]}, 1), got {shape(target)}")
        target = target.reshape(-1, 1)
    x = working_dtype(pred)
    t = torch.tensor(taus, dtype=x.dtype, device=x.device)
    u = target.to(x.dtype) - x
    loss = torch.maximum(t * u, (t - 1) * u)
    return reduce("quantile", loss, reduction)


pinball = quantile
