"""Targets as the task needs them: class indices, 0/1 labels, or float value columns."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from goodfit.data.dataset import RawData
from goodfit.errors import UserError

TASKS = ("classification", "binary", "regression")  # the tasks these sources serve


@dataclass
class Targets:
    """Encoded targets: int64 class indices (classification/binary) or float64 (n, D) values."""

    y: np.ndarray
    y_test: np.ndarray | None
    num_classes: int | None
    class_names: list[str] | None


def encode_targets(raw: RawData, task: str) -> Targets:
    """Check the targets suit the task and encode them; the canonical test part uses the same mapping."""
    y_test = raw.test[1] if raw.test else None
    if task == "regression":
        return _regression(raw, y_test)
    return _classes(raw, task, y_test)


def _regression(raw: RawData, y_test: np.ndarray | None) -> Targets:
    out = []
    for y in [raw.y] + ([y_test] if y_test is not None else []):
        if y.dtype.kind not in "biuf":
            bad = next(i for i, v in enumerate(y) if not _is_number(v))
            raise UserError(f"regression needs numeric targets; {raw.source!r} has {y[bad]!r} at {raw.row(bad)}",
                            "use task: classification for text labels")
        y = y.astype(np.float64)
        y = y[:, None] if y.ndim == 1 else y.reshape(len(y), -1)
        _finite(raw, y)
        out.append(y)
    return Targets(out[0], out[1] if len(out) > 1 else None, None, None)


def _classes(raw: RawData, task: str, y_test: np.ndarray | None) -> Targets:
    y = raw.y
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise UserError(f"{task} needs one label per sample; {raw.source!r} has targets of shape {raw.y.shape}",
                        "use task: regression for several target columns")
    if raw.continuous_target:
        raise UserError(f"{raw.source!r} is a regression dataset (continuous targets); it has no classes for task '{task}'",
                        "use task: regression")
    if raw.remap_labels:
        labels, names = _remap(raw, y)
        num_classes = len(names)
    else:
        labels = _integers(raw, y)
        num_classes = raw.num_classes or (len(raw.class_names) if raw.class_names else int(labels.max()) + 1)
        bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
        if len(bad):
            i = int(bad[0])
            raise UserError(f"{raw.source!r}: label {labels[i]} at {raw.row(i)} is outside [0, {num_classes}) "
                            f"({len(bad)} such labels)", "class labels must be integers 0..num_classes-1")
        names = raw.class_names or [str(c) for c in range(num_classes)]
    present = np.unique(labels)
    if task == "binary" and (num_classes != 2 or len(present) != 2):
        raise UserError(f"task binary needs exactly 2 classes; {raw.source!r} has {num_classes} "
                        f"({len(present)} present: {', '.join(names[c] for c in present[:10])})",
                        "use task: classification for more than two classes")
    if len(present) < 2:
        raise UserError(f"{raw.source!r} has a single class ({names[present[0]]}); a classifier needs at least 2",
                        "check data.target, or use task: regression")
    test = _integers(raw, y_test) if y_test is not None else None
    return Targets(labels, test, num_classes, list(names))


def _remap(raw: RawData, y: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Text or integer labels -> indices of their sorted unique values (numbers sort as numbers)."""
    if y.dtype.kind in "biuf":
        y = _integers(raw, y)
    values, labels = np.unique(y, return_inverse=True)
    return labels.astype(np.int64), [str(v) for v in values]


def _integers(raw: RawData, y: np.ndarray) -> np.ndarray:
    if y.dtype.kind not in "biuf":
        raise UserError(f"{raw.source!r}: class labels must be integers, got dtype {y.dtype}")
    if y.dtype.kind == "f":
        _finite(raw, y.reshape(len(y), -1))
        bad = np.flatnonzero(y != np.round(y))
        if len(bad):
            i = int(bad[0])
            raise UserError(f"{raw.source!r}: target {y[i]:g} at {raw.row(i)} is not a class label "
                            f"({len(bad)} non-integer targets)", "use task: regression for continuous targets")
    return y.astype(np.int64)


def _finite(raw: RawData, y: np.ndarray) -> None:
    bad = ~np.isfinite(y).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UserError(f"{raw.source!r}: {int(bad.sum())} target(s) are NaN or infinite, the first at {raw.row(i)}",
                        "drop those rows: a missing target cannot be imputed")


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False
