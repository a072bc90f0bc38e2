"""Scores of a confusion matrix, computed on the host (the matrix arrives there once per epoch).

`cm[i, j]` counts samples of true class i predicted as j (scikit-learn's orientation). Every
formula is scikit-learn 1.9's, restricted to the labels scikit-learn would use by default: the
labels present in the targets or the predictions (a label absent from both has an all-zero row and
column, and is skipped). Where scikit-learn divides 0 by 0 it substitutes `zero_division` (its
default "warn" means 0.0), and so does this module.
"""
from __future__ import annotations

import math

import numpy as np

AVERAGES = ("binary", "macro", "micro", "weighted")

# Recipe names computed from the confusion matrix alone.
CONFUSION_NAMES = frozenset({
    "accuracy", "balanced_accuracy", "mcc", "cohen_kappa", "precision", "recall", "f1",
    *(f"{avg}_{m}" for avg in ("macro", "micro", "weighted") for m in ("precision", "recall", "f1")),
})


def _divide(num: np.ndarray, den: np.ndarray, zero_division: float) -> np.ndarray:
    """num / den, with `zero_division` where den == 0."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, float(zero_division))
    np.divide(num, den, out=out, where=den != 0)
    return out


def _nanaverage(values: np.ndarray, weights: np.ndarray | None = None) -> float:
    """scikit-learn's `_nanaverage`: NaN entries skipped; all-zero weights fall back to the plain mean."""
    keep = ~np.isnan(values)
    if values.size == 0 or not keep.any():
        return float("nan")
    values = values[keep]
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)[keep]
        if weights.sum() > 0:
            return float(np.average(values, weights=weights))
    return float(np.mean(values))


def precision_recall_f1(cm: np.ndarray, average: str = "macro",
                        zero_division: float = 0.0) -> tuple[float, float, float]:
    """(precision, recall, F1) like `precision_recall_fscore_support(average=...)`.

    - "binary": the scores of class 1 (pos_label=1); needs at most two classes.
    - "macro": the unweighted mean over the labels present in targets or predictions.
    - "micro": from the summed counts; equals accuracy for single-label data.
    - "weighted": the mean weighted by each label's support (count in the targets).
    A 0/0 (precision of a never-predicted label, recall of a label absent from the targets, or
    F1 = 2TP / (2TP + FP + FN) with all three zero) is `zero_division` (0.0, 1.0 or NaN); NaN
    entries are left out of the average, as scikit-learn does.
    """
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {', '.join(AVERAGES)}, got {average!r}")
    cm = np.asarray(cm, dtype=np.float64)
    k = cm.shape[0]
    tp = np.diagonal(cm)
    pred, true = cm.sum(0), cm.sum(1)
    if average == "binary":
        if k > 2:
            raise ValueError(f"average='binary' needs labels in {{0, 1}}, got {k} classes; "
                             "choose average='macro', 'micro' or 'weighted'")
        if k < 2:  # class 1 absent from both: its counts are zero
            tp, pred, true = np.zeros(1), np.zeros(1), np.zeros(1)
        else:
            tp, pred, true = tp[1:], pred[1:], true[1:]
    else:
        present = (pred + true) > 0
        tp, pred, true = tp[present], pred[present], true[present]
        if average == "micro":
            tp, pred, true = tp.sum(keepdims=True), pred.sum(keepdims=True), true.sum(keepdims=True)
    precision = _divide(tp, pred, zero_division)
    recall = _divide(tp, true, zero_division)
    f1 = _divide(2 * tp, true + pred, zero_division)
    weights = true if average == "weighted" else None
    return _nanaverage(precision, weights), _nanaverage(recall, weights), _nanaverage(f1, weights)


def balanced_accuracy_from(cm: np.ndarray, adjusted: bool = False) -> float:
    """Mean recall over the classes present in the targets (`balanced_accuracy_score`).

    With adjusted=True, rescaled so that chance scores 0 and perfect 1: (s - 1/C) / (1 - 1/C), C the
    number of classes present in the targets.
    """
    cm = np.asarray(cm, dtype=np.float64)
    true = cm.sum(1)
    present = true > 0
    if not present.any():
        return float("nan")
    score = float(np.mean(np.diagonal(cm)[present] / true[present]))
    if adjusted:
        chance = 1 / int(present.sum())
        score = (score - chance) / (1 - chance) if chance < 1 else float("-inf") if score < 1 else float("nan")
    return score


def mcc_from(cm: np.ndarray) -> float:
    """Matthews correlation coefficient (`matthews_corrcoef`): 0.0 where a marginal is constant.

    Computed in exact integers, then one square root.
    """
    cm = np.asarray(cm).astype(np.int64)
    t = [int(v) for v in cm.sum(1)]
    p = [int(v) for v in cm.sum(0)]
    n = sum(t)
    correct = int(np.trace(cm))
    cov_tp = correct * n - sum(a * b for a, b in zip(t, p))
    cov_pp = n * n - sum(b * b for b in p)
    cov_tt = n * n - sum(a * a for a in t)
    if cov_pp * cov_tt == 0:
        return 0.0
    return cov_tp / math.sqrt(cov_pp * cov_tt)


def kappa_from(cm: np.ndarray, weights: str | None = None) -> float:
    """Cohen's kappa (`cohen_kappa_score` with labels=range(K)), optionally "linear" or "quadratic" weights
    by class-index distance (see goodfit.metrics.cohen_kappa for how that differs from sklearn's default).

    Undefined (0/0: targets and predictions share a single label, or there are no samples): NaN,
    scikit-learn's default replace_undefined_by.
    """
    if weights not in (None, "linear", "quadratic"):
        raise ValueError(f"weights must be None, 'linear' or 'quadratic', got {weights!r}")
    cm = np.asarray(cm, dtype=np.float64)
    k = cm.shape[0]
    n = cm.sum()
    if n == 0:
        return float("nan")
    expected = np.outer(cm.sum(1), cm.sum(0)) / n
    if weights is None:
        w = 1.0 - np.eye(k)
    else:
        idx = np.arange(k, dtype=np.float64)
        w = np.abs(idx[:, None] - idx[None, :])
        if weights == "quadratic":
            w = w**2
    den = float((w * expected).sum())
    if den == 0:
        return float("nan")
    return float(1 - (w * cm).sum() / den)


def confusion_metric(cm: np.ndarray, name: str) -> float:
    """One recipe-named metric of a confusion matrix (defaults: zero_division=0.0)."""
    cm = np.asarray(cm)
    if name == "accuracy":
        total = cm.sum()
        return float(np.trace(cm) / total) if total else float("nan")
    if name == "balanced_accuracy":
        return balanced_accuracy_from(cm)
    if name == "mcc":
        return mcc_from(cm) if cm.sum() else float("nan")
    if name == "cohen_kappa":
        return kappa_from(cm)
    if name in ("precision", "recall", "f1"):
        average, metric = "binary", name
    else:
        average, metric = name.split("_", 1)
    if cm.sum() == 0:
        return float("nan")
    p, r, f = precision_recall_f1(cm, average)
    return {"precision": p, "recall": r, "f1": f}[metric]
