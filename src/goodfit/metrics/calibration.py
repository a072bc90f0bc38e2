"""Calibration: expected calibration error (ECE) and reliability-diagram bins, from per-bin sums.

Bins are `n_bins` equal-width intervals of [0, 1] with edges `np.linspace(0, 1, n_bins + 1)`;
bin b holds the confidences in (edge[b], edge[b+1]], the first bin also 0 (this is
`np.searchsorted(edges[1:-1], confidence)`, the binning of scikit-learn's
`calibration_curve(strategy="uniform")`). Each bin keeps three sums: its count, the sum of its
confidences and the sum of its outcomes, so streaming and merging across processes are additions.

- Multiclass (top-label): confidence = the largest probability, outcome = 1 when its class
  (the first on ties) is the target. ECE = sum_b count_b / N * |mean outcome_b - mean confidence_b|.
- Binary (positive class): confidence = P(y = 1), outcome = the target itself, so a bin's
  "accuracy" is the fraction of positives in it and the bins are exactly `calibration_curve`'s.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

DEFAULT_BINS = 15  # Guo et al. (2017)


class ReliabilityBins(NamedTuple):
    """Per-bin reliability-diagram data; `confidence` and `accuracy` are NaN in empty bins."""

    edges: np.ndarray       # (n_bins + 1,) bin edges
    confidence: np.ndarray  # (n_bins,) mean confidence in each bin
    accuracy: np.ndarray    # (n_bins,) mean outcome in each bin (fraction correct / fraction positive)
    count: np.ndarray       # (n_bins,) samples in each bin (int64)


def bin_edges(n_bins: int) -> np.ndarray:
    """The n_bins + 1 edges of equal-width bins on [0, 1] (NumPy's linspace, bit for bit)."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    return np.linspace(0.0, 1.0, n_bins + 1)


def bin_sums(confidence: Tensor, outcome: Tensor, inner_edges: Tensor) -> Tensor:
    """(3 * n_bins,) sums on the device: counts, confidence sums, outcome sums per bin.

    `inner_edges` are edges[1:-1] on the device, in the confidence's dtype. A confidence outside
    [0, 1] lands in the nearest end bin (values are not checked: that would be a host sync).
    """
    n_bins = inner_edges.numel() + 1
    index = torch.searchsorted(inner_edges, confidence.contiguous()).clamp_(max=n_bins - 1)
    index = torch.cat([index, index + n_bins, index + 2 * n_bins])
    values = torch.cat([torch.ones_like(confidence), confidence, outcome.to(confidence.dtype)])
    return torch.zeros(3 * n_bins, dtype=confidence.dtype, device=confidence.device).scatter_add_(0, index, values)


def reliability_from(sums: np.ndarray) -> ReliabilityBins:
    """Reliability bins from the (3 * n_bins,) sums of `bin_sums`."""
    count, conf, outcome = np.asarray(sums, dtype=np.float64).reshape(3, -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ReliabilityBins(bin_edges(count.size), np.where(count > 0, conf / count, np.nan),
                               np.where(count > 0, outcome / count, np.nan), count.round().astype(np.int64))


def ece_from(sums: np.ndarray) -> float:
    """ECE from the (3 * n_bins,) sums: sum_b |outcome sum_b - confidence sum_b| / N; NaN with no samples."""
    count, conf, outcome = np.asarray(sums, dtype=np.float64).reshape(3, -1)
    total = count.sum()
    return float(np.abs(outcome - conf).sum() / total) if total else float("nan")
