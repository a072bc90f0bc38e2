"""Experiment knobs that damage the training split on purpose (DESIGN §1.3 `perturb`)."""
from __future__ import annotations

import math

import numpy as np

from goodfit.data.allocate import allocate
from goodfit.errors import UserError


def subset(n: int, keep: int, rng: np.random.Generator, labels: np.ndarray | None = None) -> np.ndarray:
    """Sorted indices of `keep` training rows, stratified on `labels` (classes within one of exact)."""
    if keep > n:
        raise UserError(f"perturb.subset={keep} is larger than the training split ({n} samples)",
                        f"use at most {n}, or lower data.split.val/test")
    groups = np.zeros(n, dtype=np.int64) if labels is None else labels
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    take = allocate(counts, np.array([keep / n, 1 - keep / n]), rng)[:, 0]
    chosen = [rng.choice(np.flatnonzero(inverse == g), size=k, replace=False) for g, k in enumerate(take)]
    return np.sort(np.concatenate(chosen))


def imbalance_counts(counts: np.ndarray, ratio: float) -> np.ndarray:
    """Class i of K keeps count_max * ratio^(i/(K-1)) (never more than it has, at least 1 if present)."""
    k = len(counts)
    target = np.floor(counts.max() * ratio ** (np.arange(k) / max(k - 1, 1)) + 0.5).astype(np.int64)
    return np.minimum(counts, np.maximum(target, (counts > 0).astype(np.int64)))


def imbalance(labels: np.ndarray, num_classes: int, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of the rows kept when classes are thinned geometrically, rarest = ratio x most frequent."""
    keep = imbalance_counts(np.bincount(labels, minlength=num_classes), ratio)
    chosen = [rng.choice(np.flatnonzero(labels == c), size=keep[c], replace=False) for c in range(num_classes)]
    return np.sort(np.concatenate(chosen))


def label_noise(labels: np.ndarray, num_classes: int, p: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels, flipped rows): exactly round(p n) labels, each moved to a uniformly drawn *other* class."""
    m = math.floor(p * len(labels) + 0.5)  # round half up, not numpy's round-half-to-even
    rows = np.sort(rng.choice(len(labels), size=m, replace=False))
    noisy = labels.copy()
    # adding 1..K-1 modulo K reaches every other class with equal probability and never the same one
    noisy[rows] = (labels[rows] + rng.integers(1, num_classes, size=m)) % num_classes
    return noisy, rows


def feature_factors(input_shape: tuple[int, ...], s: float) -> np.ndarray:
    """Per-feature factors s^(j/(d-1)) over the flattened features j, shaped like one sample."""
    d = math.prod(input_shape)
    return (s ** (np.arange(d) / max(d - 1, 1))).reshape(input_shape)
