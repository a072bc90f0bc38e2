"""The data's two forms: as a source delivers it (RawData) and as split for training (DataSplits)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from torch import Tensor


@dataclass
class RawData:
    """Arrays as read from one source, before any target encoding, split or statistics."""

    x: np.ndarray                       # (n, *input_shape) float64, NaN where a value is missing
    y: np.ndarray                       # (n,) or (n, D): numbers, or strings for a CSV's text labels
    source: str                         # what the user wrote in data.source
    kind: str                           # "builtin" | "csv" | "npz"
    feature_names: list[str] | None = None
    class_names: list[str] | None = None  # names of integer labels 0..K-1, when the source knows them
    num_classes: int | None = None      # declared class count (npz), else inferred from the labels
    continuous_target: bool = False     # a regression dataset: its numbers are not class labels
    remap_labels: bool = False          # CSV: labels map to their sorted unique values
    test: tuple[np.ndarray, np.ndarray] | None = None  # a canonical test split (x, y), kept as the test split
    row_lines: np.ndarray | None = None  # CSV: the file line of each row, so messages point into the file
    notes: list[str] = field(default_factory=list)

    def row(self, i: int) -> str:
        """How a message names row i: CSV data rows count from 1 (plus the file line), arrays from 0."""
        if self.row_lines is not None:
            return f"data row {i + 1} (line {int(self.row_lines[i])})"
        return f"row {i}"

    def column(self, j: int) -> str:
        """How a message names flattened feature j."""
        if self.feature_names is not None and j < len(self.feature_names):
            return repr(self.feature_names[j])
        index = np.unravel_index(j, self.x.shape[1:])
        return "[" + ", ".join(str(int(i)) for i in index) + "]"


@dataclass
class DataSplits:
    """Train/val/test tensors (CPU) with what a model, loss and report need to know about them."""

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    task: str                           # "classification" | "binary" | "regression"
    input_shape: tuple[int, ...]        # per-sample shape, e.g. (1, 8, 8)
    num_classes: int | None             # classification: K; binary: 2; regression: None
    num_outputs: int                    # K for classification, 1 for binary, D for regression
    class_names: list[str] | None
    feature_names: list[str] | None
    target_shift: Tensor | None         # regression: y_orig = y * target_scale + target_shift
    target_scale: Tensor | None
    class_weights: Tensor | None        # balance: class_weights (binary: pos_weight, shape (1,))
    info: dict
    sample_weights: Tensor | None = None  # balance: sampler; one weight per training row, for TensorLoader
    timings: list = field(default_factory=list, compare=False)  # [stage, seconds] of the data pipeline
