"""Input handling of the one-shot metric functions: tensors, NumPy arrays and lists alike."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def as_tensor(x) -> Tensor:
    """Accept tensors, NumPy arrays and lists alike."""
    # Through NumPy, a list of Python floats stays float64 (torch.as_tensor would make it float32).
    return x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))


def as_labels(x, what: str = "labels") -> Tensor:
    """Integer labels: booleans and integral floats (e.g. a NumPy float column) become int64."""
    t = as_tensor(x)
    if t.dtype == torch.bool:
        return t.long()
    if t.is_floating_point() and t.ndim <= 1:
        if t.numel() and not bool((t == t.round()).all()):
            raise ValueError(f"{what} must be integer class indices; got non-integral floats "
                             "(threshold scores first, e.g. (p > 0.5))")
        return t.long()
    return t


def num_classes_of(preds: Tensor, target: Tensor, num_classes: int | None) -> int:
    """The number of classes: given, the scores' width, or one more than the largest label."""
    if num_classes is not None:
        return int(num_classes)
    if preds.ndim == 2:
        return preds.shape[1]
    largest = max((int(t.max()) for t in (preds, target) if t.numel()), default=0)
    return max(largest, 0) + 1


def are_probabilities(scores: Tensor) -> bool:
    """Whether scores look like probabilities: all in [0, 1] and, for (N, K), rows summing to 1."""
    if scores.numel() == 0:
        return True
    s = scores.double()
    if not bool(((s >= 0) & (s <= 1)).all()):
        return False
    if s.ndim == 2 and s.shape[1] > 1:
        tol = max(1e-6, s.shape[1] * torch.finfo(scores.dtype).eps)
        return bool(((s.sum(1) - 1).abs() <= tol).all())
    return True
