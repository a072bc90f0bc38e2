"""1.8.5 Finding the initial LR: the LR range test, checked against a grid sweep."""
from __future__ import annotations

import math
import statistics

import torch

from goodfit.labs import Lab, LabContext, best_val_loss

ANSWER = r"""
**By experiment, cheaply.** The reliable answer is a grid sweep: train the model to the end at
LRs spaced evenly in log scale (say 10⁻⁴ … 1, three per decade) and keep the best on the
validation set. It costs one full training per LR. The **LR range test** (Smith 2017, the
"LR finder") gets close for the price of at most one epoch:

1. start from the untrained model with a tiny LR, and after every mini-batch multiply it by
   a constant, lrᵢ = lr₀·(lr_end/lr₀)^(i/(n−1)), an exponential sweep over ~6 decades;
2. record the training loss at each step; stop once it explodes (here: 4× its best);
3. read the curve. At tiny LRs the loss does not move (steps too small); then it falls,
   faster and faster; it bottoms out where the steps become too large to make progress,
   and then diverges. A good LR for a whole training run sits **below the bottom**: the bottom
   is the largest LR that still helps *in one step from where the model is*, and a run
   spends most of its time in sharper regions than the untrained start.
4. goodfit's default rule reads the smoothed curve (centered smoothing of log-loss, so it does
   not lag) and takes the LR of its minimum divided by 10, capped at the first LR where
   doubling a step would no longer have lowered a held-out loss (each step probes the loss at
   the new weights and at a doubled step: a greedy line search on data it did not train on;
   that catches a batch-norm net whose training loss keeps falling far past a sensible LR);
   `--rule minimum`, `steepest` (fastest descent) and `valley` are offered too.

Why it works: the loss change per step, Δℓ ≈ −η‖g‖² + ½η²gᵀHg, is negative and growing
while η is small, and turns positive once η exceeds ~2‖g‖²/gᵀHg, the curvature limit of
question 1.8.1. The sweep measures where that happens on your model and data. What the sweep
cannot see is the long run (generalization, noise late in training), which is why the grid
check below matters, and why the suggestion is a starting point, not an oracle.
"""


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt

    from goodfit.optim.lr_finder import lr_range_test
    from goodfit.recipe import load_recipe
    from goodfit.runner import build, resolve

    torch.set_num_threads(1)
    recipe = "digits-mlp"
    seeds = [0] if ctx.quick else [0, 1]
    epochs = 4 if ctx.quick else 10
    base = {"train.threads": 1, "train.epochs": epochs, "train.checkpoint_interval": 1e9,
            "train.early_stopping.patience": None}

    # 1. the range test, on each seed; it must leave the model exactly as it found it
    results = []
    for seed in seeds:
        parts = build(resolve(load_recipe(recipe, {**base, "seed": seed})), progress=False)
        t = parts.trainer
        before = {k: v.clone() for k, v in t.model.state_dict().items()}
        results.append(lr_range_test(t.model, t.loss_fn, t.optimizer, t.train_loader))
        restored = all(torch.equal(v, before[k]) for k, v in t.model.state_dict().items())
        ctx.check(restored, f"seed {seed}: after the sweep the weights are bit-identical to before")
    suggestion = math.exp(statistics.fmean(math.log(r.suggestion) for r in results))
    cost = max(r.steps / r.steps_per_epoch for r in results)
    ctx.measure("suggested LR (geometric mean over seeds)", suggestion)
    ctx.measure("range-test cost (epochs)", cost)
    ctx.check(cost <= 1.0, "the range test costs at most one epoch", f"{cost:.2f} epoch")

    # 2. the ground truth: a grid sweep at the same budget, every LR trained to the end
    lrs = [10 ** (e / 2) for e in range(-8, 1)]  # 1e-4 ... 1, half a decade apart: 9 LRs over 4 decades
    grid = {lr: statistics.fmean(best_val_loss(recipe, {**base, "seed": s, "optimizer.lr": lr}, ctx.out / "runs",
                                               at="final")
                                 for s in seeds) for lr in lrs}
    best = min(grid, key=grid.get)
    ratio = suggestion / best
    ctx.table(f"grid sweep: final validation loss after {epochs} epochs (mean of {len(seeds)} seed(s))",
              ["lr", "val loss"], [[f"{lr:.3g}", v] for lr, v in grid.items()])
    ctx.measure("grid-best LR", best)
    ctx.measure("suggestion / grid-best", ratio)
    ctx.check(1 / 3 <= ratio <= 3, "the suggestion lies within 3x of the grid sweep's best LR", f"ratio {ratio:.2f}")
    ctx.log(f"the range test took {cost:.2f} epoch per seed; the grid took {len(lrs) * epochs} epochs per seed")

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    r = results[0]
    a.plot(r.lrs, r.losses, color="0.7", lw=1, label="loss per step")
    a.plot(r.lrs, r.smoothed, lw=2, label="smoothed")
    a.axvline(suggestion, color="C3", ls="--", label=f"suggestion {suggestion:.2g}")
    a.set_xscale("log")
    a.set_ylim(top=max(r.smoothed[0] * 1.3, 0.1))
    a.set(xlabel="learning rate (sweep, one epoch)", ylabel="training loss", title="LR range test (seed 0)")
    a.legend(fontsize=8)
    b.plot(list(grid), list(grid.values()), "o-")
    b.axvline(suggestion, color="C3", ls="--", label="finder suggestion")
    b.axvline(best, color="C2", ls=":", label=f"grid best {best:.2g}")
    b.axvspan(best / 3, best * 3, color="C2", alpha=0.1, label="within 3x")
    b.set_xscale("log")
    b.set_yscale("log")
    b.set(xlabel="learning rate (whole run)", ylabel="final validation loss", title=f"grid sweep, {epochs} epochs")
    b.legend(fontsize=8)
    ctx.figure(fig, "lr_range_test")


LAB = Lab(id="1.8.5", title="Finding the initial learning rate: the LR range test",
          question="如何通过实验确定最优的初始学习率？常用的\"学习率查找器（Learning Rate Finder）\"的核心原理是什么？ — "
                   "Finding the initial LR; LR finder principle.",
          answer=ANSWER, run=run, uses="LR finder")
