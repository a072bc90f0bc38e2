"""Input normalization with statistics fitted on the training rows only."""
from __future__ import annotations

import numpy as np


def _axes(x: np.ndarray) -> tuple[int, ...]:
    """Reduce over samples (tabular: per feature) or samples and positions (ndim > 2: per channel)."""
    return (0,) if x.ndim <= 2 else (0, *range(2, x.ndim))


def fit_normalizer(x_train: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(shift, scale) broadcastable against x, so that (x - shift) / scale is normalized; None for 'none'."""
    if method == "none":
        return None
    axes = _axes(x_train)
    if method == "standard":
        shift, scale = x_train.mean(axis=axes, keepdims=True), x_train.std(axis=axes, keepdims=True)
    elif method == "minmax":
        shift = x_train.min(axis=axes, keepdims=True)
        scale = x_train.max(axis=axes, keepdims=True) - shift
    else:
        raise ValueError(f"unknown normalization {method!r}")
    # a constant feature carries no information; dividing by 1 keeps it finite instead of NaN
    scale = np.where(scale > 0, scale, 1.0)
    return shift[0], scale[0]


def summarize(stats: tuple[np.ndarray, np.ndarray] | None, method: str, ndim: int) -> dict:
    """A small, JSON-friendly record of the statistics for info and reports."""
    if stats is None:
        return {"method": "none"}
    shift, scale = (s.ravel() for s in stats)
    out = {"method": method, "per": "channel" if ndim > 2 else "feature", "count": int(shift.size)}
    if shift.size <= 64:
        out.update(shift=[float(v) for v in shift], scale=[float(v) for v in scale])
    else:
        out.update(shift_range=[float(shift.min()), float(shift.max())],
                   scale_range=[float(scale.min()), float(scale.max())])
    return out
