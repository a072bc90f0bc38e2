"""Metric-learning losses on embeddings (N, D): contrastive, triplet (and batch-hard), InfoNCE.

None of these has a recipe task: use them as functions, or as modules through `LOSSES[name](**options)`.
Distances are Euclidean, computed as sqrt(max(d², 1e-12)) so their gradient stays finite at 0.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from goodfit.losses._checks import (check_float, check_integer, check_ndim, check_number, check_reduction,
                                    check_unit_interval, reduce, shape)

__all__ = ["contrastive", "triplet", "batch_hard_triplet", "info_nce"]


def _check_pair(name: str, a: Tensor, b: Tensor, what: tuple[str, str] = ("x1", "x2")) -> None:
    check_float(name, what[0], a)
    check_float(name, what[1], b)
    check_ndim(name, what[0], a, 2, "(N, D)")
    if b.shape != a.shape:
        raise ValueError(f"{name}: {what[1]} must have {what[0]}'s shape {shape(a)} (N, D), got {shape(b)}")


def contrastive(x1: Tensor, x2: Tensor, same: Tensor, *, margin: float = 1.0, reduction: str = "mean") -> Tensor:
    """Pairwise contrastive loss (Hadsell, Chopra & LeCun 2006) of embedding pairs x1, x2 (N, D).

    same (N,): 1 (or True) for a similar pair, 0 for a dissimilar one. With d = ‖x1 − x2‖₂:
    L = same·½d² + (1 − same)·½·max(0, margin − d)².
    """
    name = "contrastive"
    check_number(name, "margin", margin, 0)
    check_reduction(name, reduction)
    _check_pair(name, x1, x2)
    if not isinstance(same, Tensor) or tuple(same.shape) != (x1.shape[0],):
        raise ValueError(f"{name}: same must be a tensor of shape ({x1.shape[0]},), 1 for similar pairs and 0 "
                         f"for dissimilar ones, got {shape(same) if isinstance(same, Tensor) else type(same).__name__}")
    check_unit_interval(name, "same", same.to(torch.uint8) if same.dtype == torch.bool else same)
    y = same.to(x1.dtype)
    d2 = ((x1 - x2) ** 2).sum(1)
    d = d2.clamp_min(1e-12).sqrt()
    loss = 0.5 * y * d2 + 0.5 * (1 - y) * F.relu(margin - d) ** 2
    return reduce(name, loss, reduction)


def triplet(anchor: Tensor, positive: Tensor, negative: Tensor, *, margin: float = 1.0, p: float = 2.0,
            swap: bool = False, reduction: str = "mean") -> Tensor:
    """Triplet margin loss (torch's triplet_margin_loss) of anchor, positive, negative embeddings (N, D):
    max(0, d(a, p) − d(a, n) + margin) with d the p-norm distance; swap uses min(d(a, n), d(p, n)).
    For labels instead of prepared triplets, see batch_hard_triplet.
    """
    name = "triplet"
    check_number(name, "margin", margin, 0)
    check_number(name, "p", p, 0, low_open=True)
    check_reduction(name, reduction)
    _check_pair(name, anchor, positive, ("anchor", "positive"))
    _check_pair(name, anchor, negative, ("anchor", "negative"))
    return F.triplet_margin_loss(anchor, positive, negative, margin=margin, p=p, swap=swap, reduction=reduction)


def _pairwise_distances(x: Tensor) -> Tensor:
    """Euclidean distances (N, N) between the rows of x, via ‖a‖² + ‖b‖² − 2a·b."""
    sq = (x * x).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp_min(1e-12)
    return d2.sqrt()


def batch_hard_triplet(embeddings: Tensor, labels: Tensor, *, margin: float = 1.0, reduction: str = "mean") -> Tensor:
    """Batch-hard triplet loss (Hermans, Beyer & Leibe 2017) of embeddings (N, D) with integer labels (N,).

    For each anchor a: max(0, margin + max_{p: y_p = y_a, p ≠ a} d(a, p) − min_{n: y_n ≠ y_a} d(a, n)),
    d Euclidean (not squared). Anchors without a positive or a negative in the batch are left out:
    `mean` averages over the anchors that have both (0 if none has), `none` gives (N,) with 0 for the
    left-out ones. Batches built as P classes × K samples give every anchor both.
    """
    name = "batch_hard_triplet"
    check_number(name, "margin", margin, 0)
    check_reduction(name, reduction)
    check_float(name, "embeddings", embeddings)
    check_ndim(name, "embeddings", embeddings, 2, "(N, D)")
    check_integer(name, "labels", labels)
    if tuple(labels.shape) != (embeddings.shape[0],):
        raise ValueError(f"{name}: labels must have shape ({embeddings.shape[0]},), one per embedding, "
                         f"got {shape(labels)}")
    d = _pairwise_distances(embeddings)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos, neg = same & ~eye, ~same
    hardest_pos = d.masked_fill(~pos, float("-inf")).amax(1)
    hardest_neg = d.masked_fill(~neg, float("inf")).amin(1)
    valid = pos.any(1) & neg.any(1)
    gap = torch.where(valid, hardest_pos - hardest_neg, torch.zeros_like(hardest_pos))
    loss = torch.where(valid, F.relu(margin + gap), torch.zeros_like(gap))
    if reduction == "mean":
        return loss.sum() / valid.sum().clamp_min(1)
    return reduce(name, loss, reduction)


def info_nce(query: Tensor, key: Tensor, *, temperature: float = 0.1, normalize: bool = True,
             symmetric: bool = False, reduction: str = "mean") -> Tensor:
    """InfoNCE (Oord et al. 2018) with in-batch negatives: query i's positive is key i, the other keys
    in the batch are its negatives. query, key: (N, D).

    s_ij = q_i·k_j / T (cosine similarity when normalize=True, as in SimCLR / CLIP);
    L_i = −log(exp(s_ii) / Σ_j exp(s_ij)) = cross_entropy(s, arange(N)). symmetric=True averages
    this with the key → query direction (CLIP). `none` gives (N,).
    """
    name = "info_nce"
    check_number(name, "temperature", temperature, 0, low_open=True)
    check_reduction(name, reduction)
    _check_pair(name, query, key, ("query", "key"))
    if normalize:
        query, key = F.normalize(query, dim=1), F.normalize(key, dim=1)
    logits = query @ key.T / temperature
    labels = torch.arange(len(query), device=query.device)
    loss = F.cross_entropy(logits, labels, reduction="none")
    if symmetric:
        loss = (loss + F.cross_entropy(logits.T, labels, reduction="none")) / 2
    return reduce(name, loss, reduction)
