"""Classification losses: cross-entropy, BCE, focal, hinge, KL / distillation, class-balanced weights.

Shapes: multiclass logits (N, K) or (N, K, *) with integer class indices (N,) or (N, *); binary and
multilabel logits (N,), (N, 1) or (N, K) with targets in [0, 1] of the same shape ((N,) and (N, 1)
are matched to each other). torch's built-ins do the arithmetic wherever one exists.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from goodfit.losses._checks import (check_classes, check_float, check_integer, check_number, check_reduction,
                                    check_unit_interval, match_shape, on_host, reduce, shape, working_dtype)

__all__ = ["cross_entropy", "bce_with_logits", "focal", "binary_focal", "class_balanced_weights",
           "multi_margin", "kl_div", "distillation"]


def _class_weights(name: str, key: str, weight, num_classes: int, like: Tensor) -> Tensor | None:
    """Per-class weights as a (K,) tensor on the logits' device and dtype."""
    if weight is None:
        return None
    weight = torch.as_tensor(weight).to(like)
    if weight.shape != (num_classes,):
        raise ValueError(f"{name}: {key} must have shape ({num_classes},), one weight per class, "
                         f"got {shape(weight)}")
    return weight


def _bool_as_index(target):
    """Boolean class targets as the indices 0 and 1 (as torch's .long() would give)."""
    return target.long() if isinstance(target, Tensor) and target.dtype == torch.bool else target


def _check_indices(name: str, logits: Tensor, target: Tensor, ignore_index: int | None = None) -> None:
    """Logits (N, K, *) and integer class indices (N, *) in [0, K) (or ignore_index)."""
    check_float(name, "logits", logits)
    if logits.ndim < 2:
        raise ValueError(f"{name}: logits must have shape (N, K), got {shape(logits)}")
    check_integer(name, "target", target)
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(f"{name}: logits of shape {shape(logits)} need integer class "
                         f"targets of shape {expected}, got {shape(target)}")
    check_classes(name, target, logits.shape[1], ignore_index)


def cross_entropy(logits: Tensor, target: Tensor, *, label_smoothing: float = 0.0,
                  weight: Tensor | None = None, reduction: str = "mean", ignore_index: int = -100) -> Tensor:
    """Softmax cross-entropy of logits (N, K, *) against class indices (N, *) or probabilities (N, K, *).

    `label_smoothing` ε mixes the target with the uniform distribution (1 − ε)·y + ε/K; `weight` (K,)
    weighs each sample by its class, and the mean is then Σ w_y·loss / Σ w_y (torch's convention);
    positions whose index equals `ignore_index` add nothing, not even to the mean's denominator.
    """
    check_number("cross_entropy", "label_smoothing", label_smoothing, 0, 1)
    check_reduction("cross_entropy", reduction)
    if isinstance(target, Tensor) and target.is_floating_point():  # soft targets, as mixup and cutmix produce
        check_float("cross_entropy", "logits", logits)
        if logits.ndim < 2:
            raise ValueError(f"cross_entropy: logits must have shape (N, K), got {shape(logits)}")
        if target.shape != logits.shape:
            raise ValueError(f"cross_entropy: probability targets must have the logits' shape "
                             f"{shape(logits)}, got {shape(target)}; class indices must be integers")
        check_unit_interval("cross_entropy", "probability targets", target)
        target = target.to(logits.dtype)
    else:
        target = _bool_as_index(target)
        _check_indices("cross_entropy", logits, target, ignore_index)
        target = target.long()
    weight = _class_weights("cross_entropy", "weight", weight, logits.shape[1], logits)
    return F.cross_entropy(logits, target, weight=weight, label_smoothing=label_smoothing,
                           reduction=reduction, ignore_index=ignore_index)


def _binary_target(name: str, logits: Tensor, target: Tensor) -> Tensor:
    """The target matched to the logits' shape, in their dtype, checked to lie in [0, 1]."""
    check_float(name, "logits", logits)
    target = match_shape(name, logits, target)
    if target.is_complex():
        raise ValueError(f"{name}: target must be real numbers in [0, 1], got dtype {target.dtype}")
    check_unit_interval(name, "target", target)
    return target.to(logits.dtype)


def bce_with_logits(logits: Tensor, target: Tensor, *, pos_weight: Tensor | None = None,
                    reduction: str = "mean") -> Tensor:
    """Binary cross-entropy on logits (N,), (N, 1), (N, K) or (N, 1, *), targets of any numeric dtype in [0, 1].

    −[p_w·y·log σ(x) + (1 − y)·log(1 − σ(x))]; `pos_weight` p_w (scalar or one per column) weighs the
    positives, e.g. n_negative / n_positive to balance a rare positive class.
    """
    check_reduction("bce_with_logits", reduction)
    target = _binary_target("bce_with_logits", logits, target)
    if pos_weight is not None:
        pos_weight = torch.as_tensor(pos_weight).to(logits)
    return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction=reduction)


def focal(logits: Tensor, target: Tensor, *, gamma: float = 2.0, alpha: Tensor | None = None,
          ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """Softmax focal loss (Lin et al. 2017) of logits (N, K, *) against class indices (N, *).

    FL = −α_y·(1 − p_y)^γ·log p_y, p = softmax(logits). γ = 0 is cross-entropy; larger γ shrinks the
    loss of well-classified samples so the hard (often minority) ones dominate. `alpha` (K,) weighs
    each class (None: all 1); the mean is Σ α_y·FL / Σ α_y over non-ignored positions, torch's
    weighted-CE convention, so focal(γ=0, alpha=w) == cross_entropy(weight=w).
    """
    check_number("focal", "gamma", gamma, 0)
    check_reduction("focal", reduction)
    target = _bool_as_index(target)
    _check_indices("focal", logits, target, ignore_index)
    x = working_dtype(logits)
    valid = target != ignore_index
    index = torch.where(valid, target, torch.zeros_like(target)).long()
    log_p = F.log_softmax(x, dim=1).gather(1, index.unsqueeze(1)).squeeze(1)
    loss = -((-torch.expm1(log_p)) ** gamma) * log_p  # 1 − p_y = −expm1(log p_y), exact near p_y = 1
    alpha = _class_weights("focal", "alpha", alpha, logits.shape[1], x)
    w = valid.to(x.dtype) if alpha is None else alpha[index] * valid
    loss = loss * w
    if reduction == "mean":
        return loss.sum() / w.sum()
    return loss.sum() if reduction == "sum" else loss


def binary_focal(logits: Tensor, target: Tensor, *, gamma: float = 2.0, alpha: float | None = None,
                 reduction: str = "mean") -> Tensor:
    """Sigmoid focal loss (Lin et al. 2017) for binary and multilabel logits, targets in [0, 1].

    FL = −α_t·(1 − p_t)^γ·log p_t with p_t = p·y + (1 − p)·(1 − y), p = σ(logit), and α_t = α·y +
    (1 − α)·(1 − y) (None: no α weighting; the paper uses α = 0.25 with γ = 2). γ = 0, α = None
    is bce_with_logits. The mean is over all elements.
    """
    check_number("binary_focal", "gamma", gamma, 0)
    if alpha is not None:
        check_number("binary_focal", "alpha", alpha, 0, 1)
    check_reduction("binary_focal", reduction)
    y = _binary_target("binary_focal", logits, target)
    x, y = working_dtype(logits), working_dtype(y)
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    one_minus_pt = torch.sigmoid(x) * (1 - y) + torch.sigmoid(-x) * y  # σ(−x) is exact where σ(x) ≈ 1
    loss = ce * one_minus_pt ** gamma
    if alpha is not None:
        loss = loss * (alpha * y + (1 - alpha) * (1 - y))
    return reduce("binary_focal", loss, reduction)


def class_balanced_weights(counts, beta: float = 0.999) -> Tensor:
    """Class weights from the effective number of samples (Cui et al. 2019), normalized to sum to K.

    w_c ∝ (1 − β) / (1 − β^{n_c}) for `counts` n_c (K,), all ≥ 1 (e.g. torch.bincount(y, minlength=K)).
    β = 0 gives uniform weights, β → 1 inverse class frequency (β = 1 is taken as that limit).
    Pass the result as cross_entropy's `weight` or focal's `alpha`. Returns float32 on the counts' device.
    """
    check_number("class_balanced_weights", "beta", beta, 0, 1)
    device = counts.device if isinstance(counts, Tensor) else None
    n = torch.as_tensor(counts, dtype=torch.float64, device=device)
    if n.ndim != 1 or n.numel() == 0:
        raise ValueError(f"class_balanced_weights: counts must have shape (K,), one count per class, got {shape(n)}")
    if not bool(torch.isfinite(n).all()) or bool((n < 1).any()):
        raise ValueError("class_balanced_weights: every count must be a finite number >= 1 (a class with no "
                         f"samples has no effective number), got {n.tolist()}")
    if beta == 1:
        w = 1 / n
    else:  # 1 − β^n = −expm1(n·log β), exact for β near 1
        w = (1 - beta) / -torch.expm1(n * math.log(beta)) if beta > 0 else torch.ones_like(n)
    return (w * len(w) / w.sum()).float()


def multi_margin(logits: Tensor, target: Tensor, *, p: int = 1, margin: float = 1.0,
                 weight: Tensor | None = None, reduction: str = "mean") -> Tensor:
    """Multiclass hinge loss (torch's multi_margin_loss) of scores (N, K) against class indices (N,).

    Σ_{j≠y} max(0, margin − x_y + x_j)^p / K per sample; `weight` (K,) scales each sample by w_y.
    """
    if p not in (1, 2) or isinstance(p, bool):
        raise ValueError(f"multi_margin: p must be 1 or 2, got {p!r}")
    check_number("multi_margin", "margin", margin, 0)
    check_reduction("multi_margin", reduction)
    target = _bool_as_index(target)
    _check_indices("multi_margin", logits, target)
    if logits.ndim != 2:
        raise ValueError(f"multi_margin: logits must have shape (N, K), got {shape(logits)}")
    weight = _class_weights("multi_margin", "weight", weight, logits.shape[1], logits)
    return F.multi_margin_loss(logits, target.long(), p=p, margin=margin, weight=weight, reduction=reduction)


def _check_probabilities(name: str, what: str, probs: Tensor, like: Tensor) -> None:
    """A probability tensor of the logits' shape whose entries lie in [0, 1] and sum to 1 over dim 1."""
    check_float(name, what, probs)
    if probs.shape != like.shape:
        raise ValueError(f"{name}: {what} must have the logits' shape {shape(like)}, got {shape(probs)}")
    check_unit_interval(name, what, probs)
    if on_host(probs) and probs.numel() and bool(((probs.sum(1) - 1).abs() > 1e-3).any()):
        raise ValueError(f"{name}: {what} must sum to 1 over the class dimension (dim 1)")


def kl_div(logits: Tensor, target: Tensor, *, reduction: str = "mean") -> Tensor:
    """KL(target ‖ softmax(logits)) = Σ_k t_k·(log t_k − log q_k) per sample, for logits (N, K, *) and
    probabilities `target` of the same shape. `mean` averages the per-sample sums over the samples
    (torch's reduction="batchmean", the true KL); `none` gives them, shape (N, *).
    """
    check_reduction("kl_div", reduction)
    check_float("kl_div", "logits", logits)
    if logits.ndim < 2:
        raise ValueError(f"kl_div: logits must have shape (N, K), got {shape(logits)}")
    _check_probabilities("kl_div", "target probabilities", target, logits)
    per_sample = F.kl_div(F.log_softmax(logits, dim=1), target.to(logits.dtype), reduction="none").sum(1)
    return reduce("kl_div", per_sample, reduction)


def distillation(student_logits: Tensor, teacher_logits: Tensor, target: Tensor | None = None, *,
                 temperature: float = 4.0, alpha: float = 0.5, reduction: str = "mean") -> Tensor:
    """Knowledge distillation (Hinton et al. 2015) of student logits (N, K) from teacher logits (N, K).

    α·T²·KL(softmax(teacher/T) ‖ softmax(student/T)) + (1 − α)·CE(student, target). The T² keeps the
    soft term's gradients the same size as T changes. The teacher is a constant (its logits are
    detached). `target` (N,) class indices is needed unless α = 1.
    """
    check_number("distillation", "temperature", temperature, 0, low_open=True)
    check_number("distillation", "alpha", alpha, 0, 1)
    check_reduction("distillation", reduction)
    check_float("distillation", "student_logits", student_logits)
    check_float("distillation", "teacher_logits", teacher_logits)
    if student_logits.ndim != 2:
        raise ValueError(f"distillation: student_logits must have shape (N, K), got {shape(student_logits)}")
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"distillation: teacher_logits must have the student's shape {shape(student_logits)}, "
                         f"got {shape(teacher_logits)}")
    teacher = F.softmax(teacher_logits.detach().to(student_logits.dtype) / temperature, dim=1)
    soft = kl_div(student_logits / temperature, teacher, reduction="none") * temperature ** 2
    loss = alpha * soft
    if alpha < 1:
        if target is None:
            raise ValueError(f"distillation: alpha={alpha:g} < 1 mixes in hard-label cross-entropy, so it needs "
                             "target, class indices of shape (N,); pass one or set alpha=1")
        loss = loss + (1 - alpha) * cross_entropy(student_logits, target, reduction="none")
    return reduce("distillation", loss, reduction)
