"""Regression metrics (MSE, RMSE, MAE, MAPE, R², explained variance) from per-column running
statistics kept on the device.

Conventions (all tested equal to scikit-learn 1.9):
- Multi-output: each metric is the uniform average over output columns, as sklearn's default
  multioutput="uniform_average"; rmse is the mean of the per-column RMSEs, as
  `root_mean_squared_error`.
- mape = `mean_absolute_percentage_error`: |y - ŷ| / max(|y|, eps), eps = float64's machine
  epsilon, a fraction (not a percentage).
- explained_variance = `explained_variance_score` (force_finite=True): 1 - Var(y - ŷ) / Var(y);
  1.0 where the residual is constant (perfect up to a shift), else 0.0 where the target is
  constant; both constancies detected exactly (min == max), as for r2. A single sample: 1.0.
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
from goodfit.metrics.sync import acc_dtype, all_gather, distributed, to_host


def _as_columns(x: Tensor, num_outputs: int, what: str) -> Tensor:
    """A (N,) or (N, D) tensor as (N, D)."""
    if x.ndim == 1 and num_outputs == 1:
        return x.unsqueeze(1)
    if x.ndim == 2 and x.shape[1] == num_outputs:
        return x
    expected = "(N,) or (N, 1)" if num_outputs == 1 else f"(N, {num_outputs})"
    raise ValueError(f"regression {what} must have shape {expected}, got {tuple(x.shape)}")


class RegressionMetrics:
    """Streaming regression metrics per output column, optionally in the data's original units.

    The statistics per column: n, sse, sae, [sape], [mean, m2, min, max of the target] (for r2 and
    explained_variance), [rmean, rm2, rmin, rmax of the residual] (explained_variance). Merging
    (`merge`, `sync`) combines means and squared deviations by Chan et al.'s parallel update.
    """

    def __init__(self, num_outputs: int, names: Sequence[str], device=None,
                 target_scale: Tensor | None = None, target_shift: Tensor | None = None):
        if num_outputs < 1:
            raise ValueError(f"num_outputs must be at least 1, got {num_outputs}")
        self.names = check_names("regression", names)
        self._spread = "r2" in self.names or "explained_variance" in self.names
        self._residual = "explained_variance" in self.names
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
        batch = {"n": n_b, "sse": (err * err).sum(0), "sae": err.abs().sum(0)}
        if "mape" in self.names:
            batch["sape"] = (err.abs() / y.abs().clamp(min=torch.finfo(torch.float64).eps)).sum(0)
        if self._spread:
            batch.update(_spread(y, ""))
        if self._residual:
            batch.update(_spread(err, "r"))
        self._stats = batch if self._stats is None else _merge(self._stats, batch)

    def compute(self) -> dict[str, float]:
        """The requested metrics over everything since the last reset (one host sync)."""
        if self._stats is None:
            return {name: float("nan") for name in self.names}
        s = self._stats
        n = s["n"]
        values = {}
        for name in self.names:
            if name == "mse":
                values[name] = (s["sse"] / n).mean()
            elif name == "rmse":
                values[name] = (s["sse"] / n).sqrt().mean()
            elif name == "mae":
                values[name] = (s["sae"] / n).mean()
            elif name == "mape":
                values[name] = (s["sape"] / n).mean()
            elif name == "r2":
                r2 = _explained(s["sse"], _exact(s["m2"], s["min"], s["max"]))
                values[name] = torch.where(n < 2, torch.full_like(n, float("nan")), r2.mean())
            elif name == "explained_variance":
                values[name] = _explained(_exact(s["rm2"], s["rmin"], s["rmax"]),
                                          _exact(s["m2"], s["min"], s["max"])).mean()
        return to_host(values)

    def stats(self) -> dict[str, Tensor] | None:
        """The sufficient statistics (see the class docstring); None before any sample."""
        return self._stats

    def merge(self, other: RegressionMetrics) -> RegressionMetrics:
        """Add `other`'s statistics to this accumulator's (as if it had seen other's batches too)."""
        if (type(other) is not type(self) or other.names != self.names
                or other.num_outputs != self.num_outputs):
            raise ValueError("can only merge regression accumulators of the same outputs and metric names")
        if other._stats is not None:
            theirs = other._stats
            if self._stats is None:
                self._stats = dict(theirs)
            else:
                device = self._stats["n"].device
                self._stats = _merge(self._stats, {key: v.to(device) for key, v in theirs.items()})
        return self

    def sync(self, group=None) -> RegressionMetrics:
        """Combine the statistics of every process in `group` (torch.distributed); a no-op otherwise.

        One all_gather of each process's statistics, merged in rank order with Chan's update.
        """
        if not distributed(group):
            return self
        keys = self._keys()
        d = self.num_outputs
        if self._stats is None:
            device = self.device or torch.device("cpu")
            flat = torch.zeros(1 + d * (len(keys) - 1), dtype=acc_dtype(device), device=device)
        else:
            flat = torch.cat([self._stats[key].reshape(-1) for key in keys])
        parts = all_gather(flat, group)
        self._stats = None
        for part in parts:
            if float(part[0]) == 0:  # a process that saw no samples (a host read, once per sync)
                continue
            stats = {"n": part[0]}
            for i, key in enumerate(keys[1:]):
                stats[key] = part[1 + i * d:1 + (i + 1) * d]
            self._stats = stats if self._stats is None else _merge(self._stats, stats)
        return self

    def _keys(self) -> list[str]:
        keys = ["n", "sse", "sae"]
        if "mape" in self.names:
            keys.append("sape")
        if self._spread:
            keys += ["mean", "m2", "min", "max"]
        if self._residual:
            keys += ["rmean", "rm2", "rmin", "rmax"]
        return keys


def _spread(x: Tensor, prefix: str) -> dict[str, Tensor]:
    """A batch's per-column mean, sum of squared deviations, min and max."""
    mean = x.mean(0)
    return {prefix + "mean": mean, prefix + "m2": ((x - mean) ** 2).sum(0),
            prefix + "min": x.amin(0), prefix + "max": x.amax(0)}


def _exact(m2: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """The sum of squared deviations, exactly zero for a constant column (float means can leave ~1e-33)."""
    return torch.where(low == high, torch.zeros_like(m2), m2)


def _explained(num: Tensor, den: Tensor) -> Tensor:
    """1 - num / den per column with sklearn's force_finite: 1.0 where num == 0, else 0.0 where den == 0."""
    return torch.where(num == 0, torch.ones_like(num), torch.where(den == 0, torch.zeros_like(num), 1 - num / den))


def _merge(a: dict[str, Tensor], b: dict[str, Tensor]) -> dict[str, Tensor]:
    """Combine two sets of column statistics (Chan et al.'s parallel update for mean and M2)."""
    # Merging means and squared deviations, rather than summing y and y², avoids the catastrophic
    # cancellation of sum(y²) - sum(y)²/n when |mean| is large next to the spread (e.g. prices).
    n = a["n"] + b["n"]
    out = {"n": n}
    for key in a:
        if key in ("sse", "sae", "sape"):
            out[key] = a[key] + b[key]
    for prefix in ("", "r"):
        if prefix + "mean" not in a:
            continue
        mean, m2 = prefix + "mean", prefix + "m2"
        delta = b[mean] - a[mean]
        out[mean] = a[mean] + delta * (b["n"] / n)
        out[m2] = a[m2] + b[m2] + delta * delta * (a["n"] * b["n"] / n)
        out[prefix + "min"] = torch.minimum(a[prefix + "min"], b[prefix + "min"])
        out[prefix + "max"] = torch.maximum(a[prefix + "max"], b[prefix + "max"])
    return out
