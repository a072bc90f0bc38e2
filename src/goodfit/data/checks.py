"""Quality checks every source passes before any split: sizes agree and features are finite."""
from __future__ import annotations

import numpy as np

from goodfit.data.dataset import RawData
from goodfit.errors import UserError


def check_shapes(raw: RawData) -> None:
    """Non-empty, one target row per feature row, at least one feature."""
    for x, y, part in [(raw.x, raw.y, ""), *([(raw.test[0], raw.test[1], " (test part)")] if raw.test else [])]:
        if len(x) == 0 or len(y) == 0:
            raise UserError(f"data source {raw.source!r}{part} is empty: {len(x)} feature rows, {len(y)} targets",
                            "give a dataset with at least one row per class")
        if len(x) != len(y):
            raise UserError(f"data source {raw.source!r}{part}: x has {len(x)} rows but y has {len(y)}",
                            "x and y need one row per sample, in the same order")
    if raw.x[0].size == 0:
        raise UserError(f"data source {raw.source!r} has no feature columns", "a model needs at least one input feature")


def check_finite(raw: RawData, impute: str) -> int:
    """Refuse inf anywhere and NaN unless imputation is on; returns the number of NaN cells."""
    parts = [(raw.x, "")] + ([(raw.test[0], " (test part)")] if raw.test else [])
    total_nan = 0
    for x, part in parts:
        flat = x.reshape(len(x), -1)
        inf = np.isinf(flat)
        if inf.any():
            _raise_first(raw, flat, inf, f"infinite value(s){part}", "replace them; an infinite input poisons every weight it touches")
        nan = np.isnan(flat)
        total_nan += int(nan.sum())
        if nan.any() and impute == "none":
            per_col = nan.sum(0)
            cols = np.flatnonzero(per_col)
            listed = ", ".join(f"{raw.column(j)} ({int(per_col[j])})" for j in cols[:10])
            more = f" and {len(cols) - 10} more columns" if len(cols) > 10 else ""
            _raise_first(raw, flat, nan, f"missing value(s){part} in columns {listed}{more}",
                         "set data.impute to mean, median or most_frequent (fitted on the train split), or clean the file")
    return total_nan


def _raise_first(raw: RawData, flat: np.ndarray, bad: np.ndarray, what: str, hint: str) -> None:
    i, j = np.argwhere(bad)[0]
    raise UserError(f"data source {raw.source!r} has {int(bad.sum())} {what}; the first at {raw.row(int(i))}, "
                    f"column {raw.column(int(j))}", hint)
