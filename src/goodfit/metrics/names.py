"""Which metrics each task offers, and which direction of each is better."""
from __future__ import annotations

import difflib
from collections.abc import Sequence

from goodfit.errors import UserError

TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "macro_f1"),
    "binary": ("accuracy", "macro_f1", "auroc"),
    "regression": ("mse", "mae", "r2"),
}

DEFAULT_METRICS: dict[str, list[str]] = {task: list(names) for task, names in TASK_METRICS.items()}

HIGHER_IS_BETTER: dict[str, bool] = {
    "accuracy": True,
    "macro_f1": True,
    "auroc": True,
    "r2": True,
    "mse": False,
    "mae": False,
    "loss": False,
}


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
