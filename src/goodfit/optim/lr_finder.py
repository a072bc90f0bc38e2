"""The LR range test (Smith 2017, "Cyclical Learning Rates", §3.3): train for at most one epoch
while the learning rate grows exponentially, record the loss, and read a good LR off the curve.

The sweep changes the model, the optimizer and the RNGs; all three are restored bit-exactly
afterwards, so a finder run leaves nothing behind but its result.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from goodfit.engine.loop import autocast
from goodfit.optim.restore import snapshot


@dataclass
class LRFinderResult:
    """The sweep: LRs tried, raw and smoothed losses, and the suggested LR with the rule that chose it."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    rule: str
    stopped_early: bool            # the loss diverged before the sweep reached end_lr
    steps: int                     # optimizer steps taken (at most one epoch's worth)
    steps_per_epoch: int
    suggestions: dict[str, float] = field(default_factory=dict)  # what every rule would have said

    def plot(self, path, title: str = "LR range test"):
        """Save the curve (log-LR axis) with the suggestion marked; returns the path."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(self.lrs, self.losses, color="0.75", lw=1, label="loss per step")
        ax.plot(self.lrs, self.smoothed, color="C0", lw=2, label="smoothed")
        ax.axvline(self.suggestion, color="C3", ls="--", label=f"suggestion {self.suggestion:.2g} ({self.rule})")
        ax.set_xscale("log")
        finite = [v for v in self.smoothed if math.isfinite(v)]
        if finite:  # the divergence tail would squash the interesting part of the curve
            lo, hi = min(finite), finite[0]
            ax.set_ylim(lo - 0.1 * (hi - lo + 1e-12), max(hi, lo) + 0.6 * (hi - lo + 1e-12))
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss")
        ax.set_title(title)
        ax.legend(fontsize=8)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        return path


def lr_grid(start_lr: float, end_lr: float, steps: int) -> np.ndarray:
    """lr_i = start·(end/start)^(i/(steps−1)): an exponential sweep."""
    return start_lr * (end_lr / start_lr) ** (np.arange(steps) / max(1, steps - 1))


def smooth(losses, width: float = 0.05) -> np.ndarray:
    """Centered Gaussian smoothing over the step index (σ = width·steps, at least 1 step).

    Centered, not an exponential moving average: an EMA lags, which shifts the whole curve, and
    so the suggestion, toward larger LRs. Edges are renormalized so they are not pulled down.
    """
    y = np.asarray(losses, dtype=np.float64)
    n = len(y)
    if n < 3:
        return y.copy()
    sigma = max(1.0, width * n)
    offsets = np.arange(n)[:, None] - np.arange(n)[None, :]
    w = np.exp(-0.5 * (offsets / sigma) ** 2)
    return (w @ y) / w.sum(axis=1)


def smooth_losses(losses) -> np.ndarray:
    """`smooth` in log space when every loss is positive (a loss falls over orders of magnitude, and
    a spike should not drag its neighbours up), in linear space otherwise (e.g. a Gaussian NLL)."""
    y = np.asarray(losses, dtype=np.float64)
    if len(y) and (y > 0).all():
        return np.exp(smooth(np.log(y)))
    return smooth(y)


def _descent(smoothed: np.ndarray) -> int:
    """The index of the minimum of the smoothed curve: where the loss stops falling."""
    return int(np.argmin(smoothed))


def suggest_steepest(lrs: np.ndarray, smoothed: np.ndarray) -> float:
    """The LR where the smoothed loss falls fastest per unit of log LR, before its minimum."""
    end = _descent(smoothed)
    if end < 2:
        return float(lrs[0])
    slope = np.gradient(smoothed[: end + 1], np.log(lrs[: end + 1]))
    return float(lrs[int(np.argmin(slope))])


def suggest_minimum(lrs: np.ndarray, smoothed: np.ndarray) -> float:
    """A tenth of the LR at the smoothed loss's minimum (the loss is about to blow up there)."""
    return float(lrs[_descent(smoothed)] / 10)


def suggest_valley(lrs: np.ndarray, smoothed: np.ndarray) -> float:
    """The geometric middle of the valley: the LRs before the minimum whose smoothed loss has
    already fallen by more than half of the total drop (start to minimum).

    The lower edge of that range is where training starts to work; the minimum is where it
    is about to fail; a run that is to last many epochs does best between the two.
    """
    end = _descent(smoothed)
    if end < 2:
        return float(lrs[0])
    drop = smoothed[0] - smoothed[end]
    if not drop > 0:
        return float(lrs[0])
    below = np.nonzero(smoothed[: end + 1] <= smoothed[0] - 0.5 * drop)[0]
    first = int(below[0])
    return float(math.sqrt(lrs[first] * lrs[end]))


# "minimum" is the default: of the three, it landed nearest the grid-best LR on the built-in recipes
# (benchmarks/lr_finder_accuracy.py); it is also the classic rule (fastai's lr_min)
RULES = {"minimum": suggest_minimum, "steepest": suggest_steepest, "valley": suggest_valley}
DEFAULT_RULE = "minimum"


def _batches(loader, steps: int):
    """`steps` batches from the loader's first epoch (then the next epochs, if asked for more)."""
    epoch, given = 0, 0
    while given < steps:
        for batch in loader.epoch(epoch):
            yield batch
            given += 1
            if given == steps:
                return
        epoch += 1


def _before_blowup(losses: list[float], factor: float) -> int:
    """How many leading losses to read the curve from: the finite prefix, cut after its lowest
    loss where the loss first exceeds `factor`× that lowest loss. Past that point the run is
    diverging, and its huge losses would drag the smoothed curve's minimum to the left. (Cutting
    only after the minimum keeps a noisy start, where batches differ by 2x, from ending the curve.)"""
    finite = next((i for i, v in enumerate(losses) if not math.isfinite(v)), len(losses))
    if finite == 0:
        return 0
    low = min(range(finite), key=losses.__getitem__)
    return next((i for i in range(low + 1, finite) if losses[i] > factor * losses[low]), finite)


def lr_range_test(model: torch.nn.Module, loss_fn, optimizer: torch.optim.Optimizer, loader, *,
                  start_lr: float = 1e-6, end_lr: float = 1.0, steps: int | None = None,
                  diverge_factor: float = 4.0, rule: str = DEFAULT_RULE, device: torch.device | None = None,
                  precision: str = "fp32") -> LRFinderResult:
    """Sweep the LR exponentially from start_lr to end_lr over `steps` optimizer steps (default:
    one epoch of `loader`), stopping early once the loss exceeds `diverge_factor`× its best
    smoothed value or is non-finite; then restore model, optimizer and RNGs exactly.

    `loader` yields (x, y) batches through `loader.epoch(e)` (goodfit.data.TensorLoader).
    Every param group gets the same LR, scaled by its ratio to the first group's (discriminative
    LRs keep their ratios).
    """
    if rule not in RULES:
        raise ValueError(f"unknown suggestion rule {rule!r}; known: {sorted(RULES)}")
    if not 0 < start_lr < end_lr:
        raise ValueError(f"need 0 < start_lr < end_lr, got {start_lr} and {end_lr}")
    per_epoch = len(loader)
    steps = per_epoch if steps is None else int(steps)
    if steps < 5:
        raise ValueError(f"an LR range test needs at least 5 steps, got {steps} (one epoch has {per_epoch} batches)")
    device = device or next(model.parameters()).device
    lrs = lr_grid(start_lr, end_lr, steps)
    ratios = [g["lr"] / optimizer.param_groups[0]["lr"] for g in optimizer.param_groups]
    restore = snapshot(model, optimizer)
    losses: list[float] = []
    best, avg, stopped = math.inf, 0.0, False
    try:
        model.train()
        for i, (x, y) in enumerate(_batches(loader, steps)):
            for g, r in zip(optimizer.param_groups, ratios):
                g["lr"] = float(lrs[i]) * r
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, precision):
                loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            value = loss.item()  # the stop test needs it now: one sync per step is the finder's price
            losses.append(value)
            # the stop test uses a causal EMA (bias-corrected); the suggestion uses centered smoothing
            avg = 0.7 * avg + 0.3 * value
            ema = avg / (1 - 0.7 ** (i + 1))
            if not math.isfinite(value) or ema > diverge_factor * best:
                stopped = True
                break
            best = min(best, ema)
    finally:
        restore()
    n = len(losses)
    usable = _before_blowup(losses, 2.0)  # the curve is read up to where the loss doubles
    tried = lrs[:usable]
    smoothed = smooth_losses(losses[:usable])
    if usable < 3:
        suggestions = {name: float(lrs[0]) for name in RULES}
    else:
        suggestions = {name: fn(tried, smoothed) for name, fn in RULES.items()}
    smoothed_all = list(smoothed) + [math.nan] * (n - len(smoothed))
    return LRFinderResult(lrs=[float(v) for v in lrs[:n]], losses=losses, smoothed=[float(v) for v in smoothed_all],
                          suggestion=suggestions[rule], rule=rule, stopped_early=stopped, steps=n,
                          steps_per_epoch=per_epoch, suggestions=suggestions)
