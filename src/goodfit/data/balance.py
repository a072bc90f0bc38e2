"""Class balancing from training-split frequencies: loss weights or sampling weights."""
from __future__ import annotations

import numpy as np


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse-frequency weights with mean 1, one per class (binary too: the loss turns (w0, w1)
    into BCE's pos_weight = w1 / w0 = n_neg / n_pos)."""
    counts = np.bincount(labels.astype(np.int64), minlength=num_classes).astype(np.float64)
    inverse = 1.0 / np.maximum(counts, 1.0)  # a class absent from train counts as one sample
    return inverse / inverse.mean()


def sampler_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """One weight per row, 1 / (its class count): every class is drawn equally often."""
    counts = np.bincount(labels, minlength=num_classes)
    return 1.0 / counts[labels]
