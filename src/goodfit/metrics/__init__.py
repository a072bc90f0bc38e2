"""Metrics: streaming accumulators for the training loop and one-shot functions built on them.

The functions (`accuracy`, `macro_f1`, `auroc`, `mse`, `mae`, `r2`) run an accumulator over a
single batch, so the loop and a user's one-off call share one code path. Conventions, and their
equality with scikit-learn, are documented in `classification` and `regression`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from goodfit.metrics.classification import BinaryMetrics, ClassificationMetrics
from goodfit.metrics.names import DEFAULT_METRICS, HIGHER_IS_BETTER, TASK_METRICS, check_names, check_task
from goodfit.metrics.regression import RegressionMetrics

__all__ = [
    "TASK_METRICS", "DEFAULT_METRICS", "HIGHER_IS_BETTER",
    "ClassificationMetrics", "BinaryMetrics", "RegressionMetrics", "make_metrics",
    "accuracy", "macro_f1", "auroc", "mse", "mae", "r2",
]


def make_metrics(task: str, names: Sequence[str], *, num_classes: int | None = None,
                 num_outputs: int | None = None, device=None, target_scale=None, target_shift=None):
    """The accumulator for `task`; UserError for a metric the task does not offer."""
    check_task(task)
    check_names(task, names)  # before the task-specific checks, so a typo is reported first
    if task == "classification":
        if num_classes is None:
            raise ValueError("make_metrics('classification', ...) needs num_classes")
        return ClassificationMetrics(num_classes, names, device=device)
    if task == "binary":
        return BinaryMetrics(names, device=device)
    return RegressionMetrics(num_outputs or 1, names, device=device,
                             target_scale=target_scale, target_shift=target_shift)


def _tensor(x) -> Tensor:
    """Accept tensors, NumPy arrays and lists alike."""
    # Through NumPy, a list of Python floats stays float64 (torch.as_tensor would make it float32).
    return x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))


def _one_shot(metrics, name: str, preds, target) -> float:
    """Run an accumulator over one batch and return one metric."""
    metrics.update(preds, target)
    return metrics.compute()[name]


def _num_classes(preds: Tensor, target: Tensor, num_classes: int | None) -> int:
    """The number of classes: given, the logits' width, or one more than the largest label."""
    if num_classes is not None:
        return num_classes
    if preds.ndim == 2:
        return preds.shape[1]
    largest = max((int(t.max()) for t in (preds, target) if t.numel()), default=0)
    return max(largest, 0) + 1


def accuracy(preds, target) -> float:
    """Fraction of correct predictions; preds are integer labels (N,) or logits (N, K)."""
    preds, target = _tensor(preds), _tensor(target)
    k = _num_classes(preds, target, None)
    return _one_shot(ClassificationMetrics(k, ["accuracy"]), "accuracy", preds, target)


def macro_f1(preds, target, num_classes: int | None = None) -> float:
    """Unweighted mean F1 over labels present in targets or predictions (sklearn's average='macro')."""
    preds, target = _tensor(preds), _tensor(target)
    k = _num_classes(preds, target, num_classes)
    return _one_shot(ClassificationMetrics(k, ["macro_f1"]), "macro_f1", preds, target)


def auroc(scores, target) -> float:
    """Area under the ROC curve of binary scores (any monotone scale: logits or probabilities)."""
    return _one_shot(BinaryMetrics(["auroc"]), "auroc", _tensor(scores), _tensor(target))


def _regression(name: str, preds, target) -> float:
    """One regression metric, averaged uniformly over output columns."""
    preds, target = _tensor(preds), _tensor(target)
    d = preds.shape[1] if preds.ndim == 2 else 1
    return _one_shot(RegressionMetrics(d, [name]), name, preds, target)


def mse(preds, target) -> float:
    """Mean squared error (sklearn's mean_squared_error)."""
    return _regression("mse", preds, target)


def mae(preds, target) -> float:
    """Mean absolute error (sklearn's mean_absolute_error)."""
    return _regression("mae", preds, target)


def r2(preds, target) -> float:
    """Coefficient of determination (sklearn's r2_score, force_finite=True)."""
    return _regression("r2", preds, target)
