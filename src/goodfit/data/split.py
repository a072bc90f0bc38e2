"""Seeded train/val/test split, stratified on the class label when asked."""
from __future__ import annotations

import numpy as np

from goodfit.data.allocate import allocate
from goodfit.errors import UserError


def split_indices(n: int, fractions: list[float], rng: np.random.Generator,
                  labels: np.ndarray | None = None, class_names: list[str] | None = None) -> list[np.ndarray]:
    """Sorted row indices of each part; with `labels`, every class is shared out within one of exact."""
    groups = np.zeros(n, dtype=np.int64) if labels is None else labels
    if labels is not None:
        _check_stratifiable(labels, fractions, class_names)
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    table = allocate(counts, np.asarray(fractions), rng)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for g in range(len(counts)):
        members = rng.permutation(np.flatnonzero(inverse == g))
        for p, chunk in enumerate(np.split(members, np.cumsum(table[g])[:-1])):
            parts[p].append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def _check_stratifiable(labels: np.ndarray, fractions: list[float], names: list[str] | None) -> None:
    """Each class needs one sample per non-empty part, or stratifying it means nothing."""
    need = sum(f > 0 for f in fractions)
    classes, counts = np.unique(labels, return_counts=True)
    few = counts < need
    if few.any():
        listed = ", ".join(f"'{names[c] if names else c}' ({k} sample{'' if k == 1 else 's'})"
                           for c, k in zip(classes[few], counts[few]))
        raise UserError(f"too few samples for a stratified split into {need} parts: class {listed}",
                        "set data.split.stratify=false, or collect more samples of that class")
