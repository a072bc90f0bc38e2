"""Which metrics each task offers, and which direction of each is better."""
from __future__ import annotations

import difflib
from collections.abc import Sequence

from goodfit.errors import UserError

# The names a recipe's `metrics:` list may hold, per task. The first names of each task are the
# defaults (DEFAULT_METRICS): cheap sufficient statistics, no scores kept across the epoch.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": (
        "accuracy", "macro_f1", "balanced_accuracy", "micro_f1", "weighted_f1",
        "macro_precision", "macro_recall", "micro_precision", "micro_recall",
        "weighted_precision", "weighted_recall", "mcc", "cohen_kappa",
        "top3_accuracy", "top5_accuracy", "log_loss", "ece", "auroc", "average_precision",
    ),
    "binary": (
        "accuracy", "macro_f1", "auroc", "balanced_accuracy", "precision", "recall", "f1",
        "mcc", "cohen_kappa", "average_precision", "log_loss", "ece",
    ),
    "regression": ("mse", "mae", "r2", "rmse", "mape", "explained_variance"),
    "segmentation": ("pixel_accuracy", "mean_iou", "dice"),
}

# What a recipe gets when it lists no metrics (unchanged by the longer lists above).
DEFAULT_METRICS: dict[str, list[str]] = {
    "classification": ["accuracy", "macro_f1"],
    "binary": ["accuracy", "macro_f1", "auroc"],
    "regression": ["mse", "mae", "r2"],
    "segmentation": ["pixel_accuracy", "mean_iou", "dice"],
}

HIGHER_IS_BETTER: dict[str, bool] = {
    # classification and binary
    "accuracy": True, "balanced_accuracy": True,
    "macro_f1": True, "micro_f1": True, "weighted_f1": True, "f1": True,
    "macro_precision": True, "micro_precision": True, "weighted_precision": True, "precision": True,
    "macro_recall": True, "micro_recall": True, "weighted_recall": True, "recall": True,
    "mcc": True, "cohen_kappa": True, "top3_accuracy": True, "top5_accuracy": True,
    "auroc": True, "average_precision": True,
    "log_loss": False, "ece": False,
    # regression
    "r2": True, "explained_variance": True,
    "mse": False, "rmse": False, "mae": False, "mape": False,
    # segmentation
    "pixel_accuracy": True, "mean_iou": True, "dice": True,
    # every task
    "loss": False,
}

# top{k}_accuracy names and their k.
TOP_K: dict[str, int] = {"top3_accuracy": 3, "top5_accuracy": 5}


def _did_you_mean(name: str, choices: Sequence[str]) -> str:
    """A hint that names the closest choice, or lists them all when none is close."""
    close = difflib.get_close_matches(name, choices, n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    return "choose from: " + ", ".join(choices)


def check_task(task: str) -> tuple[str, ...]:
    """The metric names available for `task`; UserError for an unknown task."""
    if task not in TASK_METRICS:
        raise UserError(
            f"no metrics for task {task!r}; tasks with metrics: {', '.join(TASK_METRICS)}",
            _did_you_mean(task, list(TASK_METRICS)),
        )
    return TASK_METRICS[task]


def check_names(task: str, names: Sequence[str]) -> tuple[str, ...]:
    """`names` without duplicates, in order; UserError for one the task does not offer."""
    if isinstance(names, str):  # a bare string would otherwise be read letter by letter
        names = [names]
    available = check_task(task)
    for name in names:
        if name not in available:
            raise UserError(
                f"metric {name!r} is not available for task {task!r}; available: {', '.join(available)}",
                _did_you_mean(name, available),
            )
    return tuple(dict.fromkeys(names))
