"""`goodfit.lr_find`: the LR range test on a recipe's own model, optimizer and training data.

(The module is find_lr.py so that it never shadows the function `goodfit.lr_find`.)
For plain PyTorch objects use `goodfit.optim.lr_finder.lr_range_test` directly.
"""
from __future__ import annotations

from pathlib import Path

import torch

from goodfit.errors import UserError
from goodfit.optim.lr_finder import DEFAULT_RULE, PROBE_RULES, RULES, LRFinderResult, lr_range_test
from goodfit.recipe import Recipe, load_recipe, write_patched_recipe

HOLDOUT_CAP = 512  # val samples the probes evaluate (2 forward passes per sweep step): bounds their cost


def lr_find(recipe: str | Path | dict | Recipe | None = None, overrides: list[str] | dict | None = None, *,
            start_lr: float = 1e-6, end_lr: float = 1.0, steps: int | None = None, rule: str = DEFAULT_RULE,
            plot: str | Path | None = None) -> LRFinderResult:
    """Run the LR range test for a recipe (at most one epoch of its training data, its batch size,
    optimizer and loss); the recipe's model is built, swept and discarded. The held-out probes use
    at most HOLDOUT_CAP samples of the val split (the next training batch without one). `plot`
    saves the curve."""
    from goodfit.runner import _torch_threads, build, resolve

    if rule not in RULES:
        raise UserError(f"unknown suggestion rule '{rule}'", "choose one of: " + ", ".join(RULES))
    if not 0 < start_lr < end_lr:
        raise UserError(f"the sweep needs 0 < start_lr < end_lr, got {start_lr:g} and {end_lr:g}")
    resolved = resolve(load_recipe(recipe, overrides))
    # the sweep is not a run: no doctor (its pre-flight data checks would cost more than the sweep)
    resolved = resolved.model_copy(update={"doctor": resolved.doctor.model_copy(update={"enabled": False})})
    with _torch_threads():
        parts = build(resolved, progress=False)
        t = parts.trainer
        per_epoch = len(t.train_loader)
        if steps is not None and not 5 <= steps <= per_epoch:
            raise UserError(f"--steps must be between 5 and one epoch ({per_epoch} batches of "
                            f"{resolved.train.batch_size}), got {steps}",
                            "the finder is meant to cost at most one epoch")
        if per_epoch < 5:
            raise UserError(f"one epoch has only {per_epoch} batches: too few for an LR sweep",
                            "use a smaller train.batch_size for the sweep, e.g. --set train.batch_size=16")
        # the held-out probes (2 forward passes per step) only for the rules that read them: the classic
        # rules cost one epoch of training time, the default about 3-6 on the built-in recipes
        probes = rule in PROBE_RULES
        holdout = _holdout(parts.data.x_val, parts.data.y_val) if probes else None
        result = lr_range_test(t.model, t.loss_fn, t.optimizer, t.train_loader, start_lr=start_lr, end_lr=end_lr,
                               steps=steps, rule=rule, holdout=holdout, probes=probes, device=t.device,
                               precision=t.precision)
    if plot is not None:
        Path(plot).parent.mkdir(parents=True, exist_ok=True)
        result.plot(plot, title=f"LR range test: {resolved.name} ({resolved.optimizer.name}, "
                                f"batch {resolved.train.batch_size})")
    return result


def _holdout(x, y):
    """At most HOLDOUT_CAP rows, evenly spaced over the split (its rows keep the source's order,
    which may be sorted by class); None for an empty split."""
    n = len(x)
    if n == 0:
        return None
    rows = torch.arange(min(n, HOLDOUT_CAP)) * n // min(n, HOLDOUT_CAP)
    return x[rows], y[rows]


def apply_lr(recipe: str | Path | None, overrides: list[str] | dict | None, lr: float, path: str | Path) -> Path:
    """Write the recipe document (with its --set overrides) with optimizer.lr = lr to `path`."""
    return write_patched_recipe(recipe, overrides, {"optimizer.lr": float(f"{lr:.3g}")}, path,
                                "optimizer.lr set by `goodfit lr-find` (LR range test suggestion)")
