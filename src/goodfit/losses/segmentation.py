"""Segmentation losses on soft overlaps: Dice, Jaccard (IoU), Tversky, focal Tversky, CE + Dice, BCE + Dice.

Multiclass: logits (N, C, *) with C ≥ 2 (e.g. (N, C, H, W)), probabilities softmax over C, and
integer masks (N, *) of class indices. Binary: logits (N, 1, *), probabilities σ(logit), and masks
(N, *) or (N, 1, *) holding 0/1 (any dtype; floats in [0, 1] count as soft masks). Positions whose
mask equals `ignore_index` are left out of every sum.

With p the probabilities and g the one-hot mask, per class c, summed over the batch and all
positions: TP = Σ p·g, FP = Σ p·(1 − g), FN = Σ (1 − p)·g. The loss is one score per class
(binary: the foreground only), averaged over classes for `mean`, summed for `sum`, and returned as
(C,) for `none`. `smooth` is added to numerator and denominator, so a class absent from both
mask and prediction scores 1 (loss 0).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from goodfit.losses._checks import (check_classes, check_float, check_integer, check_number, check_reduction,
                                    check_unit_interval, reduce, shape, working_dtype)
from goodfit.losses.classification import bce_with_logits, cross_entropy

__all__ = ["dice", "jaccard", "tversky", "focal_tversky", "ce_dice", "bce_dice"]


def _binary_mask(name: str, logits: Tensor, target: Tensor) -> Tensor:
    """A binary mask reshaped to the logits' (N, 1, *)."""
    if target.shape == logits.shape:
        return target
    if tuple(target.shape) == (logits.shape[0], *logits.shape[2:]):
        return target.unsqueeze(1)
    raise ValueError(f"{name}: binary logits of shape {shape(logits)} need a 0/1 mask of shape "
                     f"{(logits.shape[0], *logits.shape[2:])} or {shape(logits)}, got {shape(target)}")


def _soft_counts(name: str, logits: Tensor, target: Tensor, ignore_index: int = -100) -> tuple[Tensor, Tensor, Tensor]:
    """Soft (TP, FP, FN) per class, each of shape (C,), from logits (N, C, *) and a mask (see the module)."""
    check_float(name, "logits", logits)
    if logits.ndim < 3:
        raise ValueError(f"{name}: logits must have shape (N, C, H, W) (or (N, C, *) with spatial dims), "
                         f"got {shape(logits)}")
    if not isinstance(target, Tensor):
        raise ValueError(f"{name}: target must be a torch.Tensor mask, got {type(target).__name__}")
    x = working_dtype(logits)
    dims = [0, *range(2, logits.ndim)]
    if logits.shape[1] == 1:  # binary: sigmoid foreground probability
        target = _binary_mask(name, logits, target)
        if target.dtype == torch.bool:
            target = target.to(torch.uint8)
        valid = target != ignore_index if not target.is_floating_point() else torch.ones_like(target, dtype=torch.bool)
        check_unit_interval(name, "binary mask", target, valid)
        g = torch.where(valid, target, torch.zeros_like(target)).to(x.dtype)
        p = torch.sigmoid(x)
    else:
        check_integer(name, "mask", target)
        expected = (logits.shape[0], *logits.shape[2:])
        if tuple(target.shape) != expected:
            raise ValueError(f"{name}: logits of shape {shape(logits)} need an integer mask of shape {expected}, "
                             f"got {shape(target)}")
        check_classes(name, target, logits.shape[1], ignore_index)
        valid = (target != ignore_index).unsqueeze(1)
        index = torch.where(valid.squeeze(1), target, torch.zeros_like(target)).long()
        g = F.one_hot(index, logits.shape[1]).movedim(-1, 1).to(x.dtype)
        p = F.softmax(x, dim=1)
    v = valid.to(x.dtype)
    p, g = p * v, g * v
    tp = (p * g).sum(dims)
    return tp, (p * (1 - g)).sum(dims), ((1 - p) * g).sum(dims)


def _check_common(name: str, smooth: float, reduction: str) -> None:
    check_number(name, "smooth", smooth, 0)
    check_reduction(name, reduction)


def dice(logits: Tensor, target: Tensor, *, smooth: float = 1.0, ignore_index: int = -100,
         reduction: str = "mean") -> Tensor:
    """Soft Dice loss 1 − (2·TP + s) / (2·TP + FP + FN + s) per class, i.e. 1 − (2Σpg + s)/(Σp + Σg + s)."""
    _check_common("dice", smooth, reduction)
    tp, fp, fn = _soft_counts("dice", logits, target, ignore_index)
    return reduce("dice", 1 - (2 * tp + smooth) / (2 * tp + fp + fn + smooth), reduction)


def jaccard(logits: Tensor, target: Tensor, *, smooth: float = 1.0, ignore_index: int = -100,
            reduction: str = "mean") -> Tensor:
    """Soft Jaccard (IoU) loss 1 − (TP + s) / (TP + FP + FN + s) per class."""
    _check_common("jaccard", smooth, reduction)
    tp, fp, fn = _soft_counts("jaccard", logits, target, ignore_index)
    return reduce("jaccard", 1 - (tp + smooth) / (tp + fp + fn + smooth), reduction)


def _tversky_index(name, logits, target, alpha, beta, smooth, ignore_index) -> Tensor:
    check_number(name, "alpha", alpha, 0)
    check_number(name, "beta", beta, 0)
    tp, fp, fn = _soft_counts(name, logits, target, ignore_index)
    return (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


def tversky(logits: Tensor, target: Tensor, *, alpha: float = 0.3, beta: float = 0.7, smooth: float = 1.0,
            ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """Tversky loss (Salehi et al. 2017) 1 − (TP + s) / (TP + α·FP + β·FN + s) per class.

    α weighs false positives, β false negatives; β > α favours recall of small structures.
    α = β = ½ with s = 0 is Dice, α = β = 1 is Jaccard.
    """
    _check_common("tversky", smooth, reduction)
    index = _tversky_index("tversky", logits, target, alpha, beta, smooth, ignore_index)
    return reduce("tversky", 1 - index, reduction)


def focal_tversky(logits: Tensor, target: Tensor, *, alpha: float = 0.3, beta: float = 0.7, gamma: float = 0.75,
                  smooth: float = 1.0, ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """Focal Tversky loss (Abraham & Khan 2019) (1 − TI_c)^γ per class, TI the Tversky index above.

    γ = 1 is the Tversky loss; the paper writes the exponent as 1/γ with γ = 4/3, i.e. our γ = 0.75.
    """
    _check_common("focal_tversky", smooth, reduction)
    check_number("focal_tversky", "gamma", gamma, 0, low_open=True)
    index = _tversky_index("focal_tversky", logits, target, alpha, beta, smooth, ignore_index)
    return reduce("focal_tversky", (1 - index).clamp_min(0) ** gamma, reduction)


def ce_dice(logits: Tensor, target: Tensor, *, dice_weight: float = 1.0, smooth: float = 1.0,
            weight: Tensor | None = None, ignore_index: int = -100) -> Tensor:
    """Cross-entropy (mean over pixels, class `weight` (C,) optional) + dice_weight·Dice (mean over classes).

    Multiclass logits (N, C, *) with C ≥ 2 and integer masks (N, *); a scalar.
    """
    check_number("ce_dice", "dice_weight", dice_weight, 0)
    check_float("ce_dice", "logits", logits)
    if logits.ndim < 3 or logits.shape[1] < 2:
        raise ValueError(f"ce_dice: logits must have shape (N, C, H, W) with C >= 2 classes, got {shape(logits)}; "
                         "for one-channel binary logits use bce_dice")
    ce = cross_entropy(logits, target, weight=weight, ignore_index=ignore_index)
    return ce + dice_weight * dice(logits, target, smooth=smooth, ignore_index=ignore_index)


def bce_dice(logits: Tensor, target: Tensor, *, dice_weight: float = 1.0, smooth: float = 1.0,
             pos_weight: Tensor | None = None, ignore_index: int = -100) -> Tensor:
    """Binary cross-entropy (mean over non-ignored pixels) + dice_weight·Dice of the foreground.

    Binary logits (N, 1, *) and 0/1 masks (N, *) or (N, 1, *); a scalar.
    """
    check_number("bce_dice", "dice_weight", dice_weight, 0)
    check_float("bce_dice", "logits", logits)
    if logits.ndim < 3 or logits.shape[1] != 1:
        raise ValueError(f"bce_dice: logits must have shape (N, 1, H, W), one foreground channel, got "
                         f"{shape(logits)}; for C >= 2 classes use ce_dice")
    mask = _binary_mask("bce_dice", logits, target)
    valid = mask != ignore_index if not mask.is_floating_point() else torch.ones_like(mask, dtype=torch.bool)
    clean = torch.where(valid, mask, torch.zeros_like(mask))
    per_pixel = bce_with_logits(logits, clean, pos_weight=pos_weight, reduction="none")
    v = valid.to(per_pixel.dtype)
    bce = (per_pixel * v).sum() / v.sum()
    return bce + dice_weight * dice(logits, target, smooth=smooth, ignore_index=ignore_index)
