"""Metrics: streaming accumulators for the training loop and one-shot functions built on them.

Each function (`accuracy`, `f1`, `auroc`, `r2`, `mean_iou`, ...) runs an accumulator over a single
batch and computes once, so the loop and a user's one-off call share one code path. Conventions,
and their equality with scikit-learn, are documented in `classification`, `confusion`,
`calibration`, `regression` and `segmentation`.

Accumulators keep sufficient statistics on the device: `update(output, target)` per batch (no
host sync), `compute() -> dict[str, float]` once (one host transfer). `stats()` exposes them,
`merge(other)` adds another accumulator's, and `sync(group=None)` combines them across the
processes of torch.distributed (a no-op when it is not initialized): call it before compute.
"""
from __future__ import annotations

from collections.abc import Sequence

from goodfit.metrics.calibration import ReliabilityBins
from goodfit.metrics.classification import BinaryMetrics, ClassificationMetrics
from goodfit.metrics.functional import (
    accuracy, auroc, average_precision, balanced_accuracy, cohen_kappa, confusion_matrix, ece,
    explained_variance, f1, log_loss, macro_f1, mae, mape, mcc, mse, precision, r2, recall,
    reliability_bins, rmse, top_k_accuracy,
)
from goodfit.metrics.names import DEFAULT_METRICS, HIGHER_IS_BETTER, TASK_METRICS, check_names, check_task
from goodfit.metrics.regression import RegressionMetrics
from goodfit.metrics.segmentation import SegmentationMetrics, dice, iou, mean_iou, pixel_accuracy

__all__ = [
    "TASK_METRICS", "DEFAULT_METRICS", "HIGHER_IS_BETTER",
    "ClassificationMetrics", "BinaryMetrics", "RegressionMetrics", "SegmentationMetrics", "make_metrics",
    "ReliabilityBins",
    # classification
    "accuracy", "balanced_accuracy", "precision", "recall", "f1", "macro_f1", "confusion_matrix",
    "auroc", "average_precision", "top_k_accuracy", "mcc", "cohen_kappa", "log_loss", "ece",
    "reliability_bins",
    # regression
    "mse", "rmse", "mae", "mape", "r2", "explained_variance",
    # segmentation
    "iou", "mean_iou", "dice", "pixel_accuracy",
]


def make_metrics(task: str, names: Sequence[str], *, num_classes: int | None = None,
                 num_outputs: int | None = None, device=None, target_scale=None, target_shift=None,
                 ignore_index: int | None = None):
    """The accumulator for `task`; UserError for a metric the task does not offer."""
    check_task(task)
    check_names(task, names)  # before the task-specific checks, so a typo is reported first
    if task == "classification":
        if num_classes is None:
            raise ValueError("make_metrics('classification', ...) needs num_classes")
        return ClassificationMetrics(num_classes, names, device=device)
    if task == "binary":
        return BinaryMetrics(names, device=device)
    if task == "segmentation":
        if num_classes is None:
            raise ValueError("make_metrics('segmentation', ...) needs num_classes")
        return SegmentationMetrics(num_classes, names, device=device, ignore_index=ignore_index)
    return RegressionMetrics(num_outputs or 1, names, device=device,
                             target_scale=target_scale, target_shift=target_shift)


# Detection and text metrics: the reference libraries they wrap are imported inside the functions.
from goodfit.metrics.detection import box_iou, coco_map, voc_ap  # noqa: E402
from goodfit.metrics.text import bleu, cer, chrf, perplexity, rouge, wer  # noqa: E402

__all__ += ["box_iou", "coco_map", "voc_ap", "bleu", "chrf", "rouge", "perplexity", "wer", "cer"]
