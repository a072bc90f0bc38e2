"""Regression metrics (MSE, MAE, R²) from per-column running sums kept on the device.

Conventions (all tested equal to scikit-learn 1.9):
- Multi-output: each metric is the uniform average over output columns, as sklearn's default
  multioutput="uniform_average".
- r2 follows sklearn's force_finite=True: a column predicted perfectly scores 1.0; a column whose
  target is constant but not predicted perfectly scores 0.0. Constancy is detected exactly
  (min == max), where sklearn's floating-point mean can leave a tiny nonzero variance (for
  example three targets of 0.1) and return a huge negative score instead.
- r2 of fewer than two samples is NaN, as in sklearn. No samples at all: every metric is NaN.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from goodfit.metrics.names import check_names
from goodfit.metrics.sync import acc_dtype, to_host


def _as_columns(x: Tensor, num_outputs: int, what: str) -> Tensor:
    """A (N,) or (N, D) tensor as (N, D)."""
    if x.ndim == 1 and num_outputs == 1:
        return x.unsqueeze(1)
    if x.ndim == 2 and x.shape[1] == num_outputs:
        return x
    expected = "(N,) or (N, 1)" if num_outputs == 1 else f"(N, {num_outputs})"
    raise ValueError(f"regression {what} must have shape {expected}, got {tuple(x.shape)}")


class RegressionMetrics:
    """Streaming MSE / MAE / R² per output column, optionally in the data's original units."""

    def __init__(self, num_outputs: int, names: Sequence[str], device=None,
                 target_scale: Tensor | None = None, target_shift: Tensor | None = None):
        if num_outputs < 1:
            raise ValueError(f"num_outputs must be at least 1, got {num_outputs}")
        self.names = check_names("regression", names)
        self.num_outputs = int(num_outputs)
        self.device = torch.device(device) if device is not None else None
        self._scale = None if target_scale is None else torch.as_tensor(target_scale).reshape(-1)
        self._shift = None if target_shift is None else torch.as_tensor(target_shift).reshape(-1)
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far."""
        self._stats: dict[str, Tensor] | None = None

    def _original_units(self, x: Tensor) -> Tensor:
        """Undo the trainer's target standardization: x * scale + shift."""
        if self._scale is not None:
            self._scale = self._scale.to(x)  # a no-op after the first batch
            x = x * self._scale
        if self._shift is not None:
            self._shift = self._shift.to(x)
            x = x + self._shift
        return x

    def update(self, output: Tensor, target: Tensor) -> None:
        """Add a batch: predictions and targets of shape (N,) or (N, D)."""
        d = self.num_outputs
        output = _as_columns(output, d, "output")
        target = _as_columns(target, d, "target")
        if output.shape[0] != target.shape[0]:
            raise ValueError(f"output has {output.shape[0]} samples but target has {target.shape[0]}")
        if output.shape[0] == 0:
            return
        device = self.device or output.device
        dtype = acc_dtype(device)
        y_hat = self._original_units(output.detach().to(device, dtype))
        y = self._original_units(target.to(device, dtype))
        err = y - y_hat
        n_b = torch.full((), y.shape[0], dtype=dtype, device=device)  # a fill kernel, not a host copy
        mean_b = y.mean(0)
        batch = {
            "n": n_b, "sse": (err * err).sum(0), "sae": err.abs().sum(0),
            "mean": mean_b, "m2": ((y - mean_b) ** 2).sum(0),
            "min": y.amin(0), "max": y.amax(0),
        }
        self._stats = batch if self._stats is None else _merge(self._stats, batch)

    def compute(self) -> dict[str, float]:
        """The requested metrics over everything since the last reset (one host sync)."""
        if self._stats is None:
            return {name: float("nan") for name in self.names}
        s = self._stats
        n = s["n"]
        values = {"mse": (s["sse"] / n).mean(), "mae": (s["sae"] / n).mean()}
        if "r2" in self.names:
            sse = s["sse"]
            total = torch.where(s["min"] == s["max"], torch.zeros_like(s["m2"]), s["m2"])
            r2 = torch.where(sse == 0, torch.ones_like(sse),
                             torch.where(total == 0, torch.zeros_like(sse), 1 - sse / total))
            values["r2"] = torch.where(n < 2, torch.full_like(n, float("nan")), r2.mean())
        return to_host({name: values[name] for name in self.names})


def _merge(a: dict[str, Tensor], b: dict[str, Tensor]) -> dict[str, Tensor]:
    """Combine two sets of column statistics (Chan et al.'s parallel update for mean and M2)."""
    # Merging means and squared deviations, rather than summing y and y², avoids the catastrophic
    # cancellation of sum(y²) - sum(y)²/n when |mean| is large next to the spread (e.g. prices).
    n = a["n"] + b["n"]
    delta = b["mean"] - a["mean"]
    return {
        "n": n, "sse": a["sse"] + b["sse"], "sae": a["sae"] + b["sae"],
        "mean": a["mean"] + delta * (b["n"] / n),
        "m2": a["m2"] + b["m2"] + delta * delta * (a["n"] * b["n"] / n),
        "min": torch.minimum(a["min"], b["min"]), "max": torch.maximum(a["max"], b["max"]),
    }
