"""One-shot classification and regression metrics: an accumulator updated once and computed once.

Every function accepts tensors, NumPy arrays or lists; the argument order is (predictions, target)
(scikit-learn's is the reverse). Label metrics take integer labels (N,) or scores (N, K) (argmax,
the first class on ties); booleans and integral floats count as labels. Score metrics take
(N,) binary scores or (N, K) multiclass scores; `logits=None` decides on the host whether they are
probabilities (every value in [0, 1] and, for (N, K), rows summing to 1) or logits (then sigmoid /
softmax are applied in float64); pass logits=True/False to say so. The conventions, and their
equality with scikit-learn, are documented in `classification`, `confusion`, `calibration` and
`regression`. No samples at all: NaN.
"""
from __future__ import annotations

import numpy as np
from torch import Tensor

from goodfit.metrics.calibration import DEFAULT_BINS, ReliabilityBins
from goodfit.metrics.classification import BinaryMetrics, ClassificationMetrics, _flat
from goodfit.metrics.confusion import balanced_accuracy_from, kappa_from, mcc_from, precision_recall_f1
from goodfit.metrics.inputs import are_probabilities, as_labels, as_tensor, num_classes_of
from goodfit.metrics.regression import RegressionMetrics

# ---------------------------------------------------------------- label metrics


def _label_inputs(preds, target, num_classes: int | None) -> tuple[Tensor, Tensor, int]:
    preds = as_tensor(preds)
    if not (preds.ndim == 2 and preds.is_floating_point()):
        preds = as_labels(preds, "preds")
    target = as_labels(target, "target")
    return preds, target, num_classes_of(preds, target, num_classes)


def confusion_matrix(preds, target, *, num_classes: int | None = None) -> np.ndarray:
    """(K, K) int64 counts, rows = targets, columns = predictions: `confusion_matrix(labels=range(K))`.

    K is num_classes, else the scores' width, else one more than the largest label.
    """
    preds, target, k = _label_inputs(preds, target, num_classes)
    acc = ClassificationMetrics(k, ["accuracy"])
    acc.update(preds, target)
    return acc.confusion_matrix()


def _from_confusion(preds, target, num_classes, score) -> float:
    cm = confusion_matrix(preds, target, num_classes=num_classes)
    return score(cm) if cm.sum() else float("nan")


def accuracy(preds, target) -> float:
    """Fraction of correct predictions (`accuracy_score`); preds are labels (N,) or scores (N, K)."""
    return _from_confusion(preds, target, None, lambda cm: float(np.trace(cm) / cm.sum()))


def balanced_accuracy(preds, target, *, num_classes: int | None = None, adjusted: bool = False) -> float:
    """Mean per-class recall over the classes present in the targets (`balanced_accuracy_score`)."""
    return _from_confusion(preds, target, num_classes, lambda cm: balanced_accuracy_from(cm, adjusted))


def _prf(index: int, preds, target, average: str, num_classes, zero_division: float) -> float:
    return _from_confusion(preds, target, num_classes,
                           lambda cm: precision_recall_f1(cm, average, zero_division)[index])


def precision(preds, target, *, average: str = "binary", num_classes: int | None = None,
              zero_division: float = 0.0) -> float:
    """TP / (TP + FP) (`precision_score`); average = "binary" (class 1) | "macro" | "micro" | "weighted".

    Macro and weighted averages run over the labels present in targets or predictions; a label
    never predicted has precision 0/0 = zero_division (0.0 like sklearn's "warn", or 1.0, or NaN:
    left out of the average).
    """
    return _prf(0, preds, target, average, num_classes, zero_division)


def recall(preds, target, *, average: str = "binary", num_classes: int | None = None,
           zero_division: float = 0.0) -> float:
    """TP / (TP + FN) (`recall_score`); a label absent from the targets has recall 0/0 = zero_division."""
    return _prf(1, preds, target, average, num_classes, zero_division)


def f1(preds, target, *, average: str = "binary", num_classes: int | None = None,
       zero_division: float = 0.0) -> float:
    """2TP / (2TP + FP + FN) (`f1_score`); 0/0 (the label absent from both) = zero_division."""
    return _prf(2, preds, target, average, num_classes, zero_division)


def macro_f1(preds, target, num_classes: int | None = None) -> float:
    """Unweighted mean F1 over labels present in targets or predictions (sklearn's average='macro')."""
    return f1(preds, target, average="macro", num_classes=num_classes)


def mcc(preds, target, *, num_classes: int | None = None) -> float:
    """Matthews correlation coefficient (`matthews_corrcoef`): 0.0 when either marginal is constant."""
    return _from_confusion(preds, target, num_classes, mcc_from)


def cohen_kappa(preds, target, *, num_classes: int | None = None, weights: str | None = None) -> float:
    """Cohen's kappa (`cohen_kappa_score`, weights None | "linear" | "quadratic"); NaN where undefined.

    Weighted kappa measures disagreement by class-index distance |i - j| over all K classes, i.e.
    scikit-learn's `cohen_kappa_score(..., labels=range(K))`. scikit-learn's default instead uses
    positions among the labels *present*, which changes the weights when a class in between is
    absent from both targets and predictions; for ordinal labels the class index is the meaning.
    """
    return _from_confusion(preds, target, num_classes, lambda cm: kappa_from(cm, weights))


# ---------------------------------------------------------------- score metrics


def _score_inputs(scores, target, logits: bool | None):
    """(scores, target, probs flag, binary?) with (N, 1) scores read as binary."""
    scores = as_tensor(scores)
    if scores.ndim == 2 and scores.shape[1] == 1:
        scores = scores.reshape(-1)
    if scores.ndim not in (1, 2):
        raise ValueError(f"scores must have shape (N,) or (N, K), got {tuple(scores.shape)}")
    if not scores.is_floating_point():
        scores = scores.double()
    probs = are_probabilities(scores) if logits is None else not logits
    binary = scores.ndim == 1
    target = as_tensor(target)
    if binary:
        target = _flat(target, "binary target")
    else:
        target = as_labels(target, "target")
    return scores, target, probs, binary


def _score_metric(name: str, scores, target, logits: bool | None = None, **options):
    scores, target, probs, binary = _score_inputs(scores, target, logits)
    if binary:
        acc = BinaryMetrics([name], probs=probs, **options)
    else:
        acc = ClassificationMetrics(scores.shape[1], [name], probs=probs, **options)
    acc.update(scores, target)
    return acc


def auroc(scores, target, *, logits: bool | None = None) -> float:
    """Area under the ROC curve (`roc_auc_score`).

    Binary scores (N,): any monotone scale (logits or probabilities), UserError when the targets
    hold one class only. Multiclass scores (N, K): one-vs-rest on the probabilities (softmax
    applied to logits; `logits` as in the module docstring), macro over the classes present in
    the targets (`multi_class="ovr"`).
    """
    return _score_metric("auroc", scores, target, logits).compute()["auroc"]


def average_precision(scores, target, *, logits: bool | None = None) -> float:
    """Step-wise area under the precision-recall curve (`average_precision_score`).

    Binary (N,): any monotone scale; 0.0 with no positive target. Multiclass (N, K): one-vs-rest on
    the probabilities, macro over the classes present in the targets.
    """
    return _score_metric("average_precision", scores, target, logits).compute()["average_precision"]


def log_loss(scores, target, *, logits: bool | None = None) -> float:
    """Mean cross-entropy of the probabilities clipped to [eps, 1 - eps] (`log_loss`, float64 eps).

    Binary (N,): P(y = 1) or logits; multiclass (N, K): probabilities or logits.
    """
    return _score_metric("log_loss", scores, target, logits).compute()["log_loss"]


def ece(scores, target, *, n_bins: int = DEFAULT_BINS, logits: bool | None = None) -> float:
    """Expected calibration error over `n_bins` equal-width bins (see `calibration`).

    Multiclass (N, K): top-label (confidence = max probability, outcome = correct). Binary (N,):
    positive class (confidence = P(y = 1), outcome = y), the bins of sklearn's `calibration_curve`.
    """
    return _score_metric("ece", scores, target, logits, n_bins=n_bins).compute()["ece"]


def reliability_bins(scores, target, n_bins: int = DEFAULT_BINS, *, logits: bool | None = None) -> ReliabilityBins:
    """Reliability-diagram bins: ReliabilityBins(edges, confidence, accuracy, count), arrays per bin.

    The same bins as `ece` (whose value is sum(count * |accuracy - confidence|) / sum(count) over
    non-empty bins); empty bins have count 0 and NaN confidence and accuracy.
    """
    return _score_metric("ece", scores, target, logits, n_bins=n_bins).reliability()


def top_k_accuracy(scores, target, k: int = 5) -> float:
    """Fraction of samples whose target is among the k highest scores (`top_k_accuracy_score`).

    Scores (N, K); ties are broken as sklearn does (the higher class index ranks first). k > K is
    a UserError; k == K scores 1.0.
    """
    scores, target = as_tensor(scores), as_labels(target, "target")
    if scores.ndim != 2:
        raise ValueError(f"top-k accuracy needs scores of shape (N, K), got {tuple(scores.shape)}")
    acc = ClassificationMetrics(scores.shape[1], [], top_k=[k])
    acc.update(scores, target)
    return acc.top_k_hits()[k]


# ---------------------------------------------------------------- regression


def _regression(name: str, preds, target) -> float:
    """One regression metric, averaged uniformly over output columns."""
    preds, target = as_tensor(preds), as_tensor(target)
    d = preds.shape[1] if preds.ndim == 2 else 1
    acc = RegressionMetrics(d, [name])
    acc.update(preds, target)
    return acc.compute()[name]


def mse(preds, target) -> float:
    """Mean squared error (`mean_squared_error`)."""
    return _regression("mse", preds, target)


def rmse(preds, target) -> float:
    """Root mean squared error, the mean of per-column RMSEs (`root_mean_squared_error`)."""
    return _regression("rmse", preds, target)


def mae(preds, target) -> float:
    """Mean absolute error (`mean_absolute_error`)."""
    return _regression("mae", preds, target)


def mape(preds, target) -> float:
    """Mean absolute percentage error as a fraction (`mean_absolute_percentage_error`)."""
    return _regression("mape", preds, target)


def r2(preds, target) -> float:
    """Coefficient of determination (`r2_score`, force_finite=True); NaN below two samples."""
    return _regression("r2", preds, target)


def explained_variance(preds, target) -> float:
    """1 - Var(residual) / Var(target) (`explained_variance_score`, force_finite=True)."""
    return _regression("explained_variance", preds, target)
