"""1.3.5 Choosing the initial LR and batch size in practice: measure, don't guess."""
from __future__ import annotations

import math
import statistics

import torch

from goodfit.labs import Lab, LabContext, best_val_loss

ANSWER = r"""
A practical order that wastes little compute:

1. **Sanity first: overfit one batch.** Take one small batch, turn off dropout, and train on
   it alone. A correct model, loss and optimizer drive its loss to almost zero in a few
   hundred steps. If they cannot, no LR or batch size will help: a label is mis-wired, the
   loss gets probabilities instead of logits, a layer is frozen or missing from the optimizer.
2. **Batch size from the hardware and the gradient noise.** The largest batch that fits in
   memory is an upper bound; the *gradient noise scale* B_noise = tr Σ/|G|² (McCandlish et
   al. 2018) says where a larger batch stops buying fewer steps (the critical batch). Keep
   enough optimizer steps per epoch (≥ 8 here). `goodfit batch-size RECIPE` measures all three.
3. **LR from a range test** at the recipe's batch size (`goodfit lr-find RECIPE`: one epoch,
   the smoothed loss's minimum / 10, capped where doubling a step stops lowering the held-out
   loss), then **rescaled to the chosen batch**: linearly for SGD
   (η ∝ B, Goyal et al. 2017), by √B for Adam-type optimizers (Malladi et al. 2022).
4. **Check once with a short grid** around the suggestion if the budget allows, and watch the
   first epochs' curves (the doctor's job): a loss that oscillates or diverges means the LR is
   too high, one that crawls means too low.

This lab runs steps 1-3 on the digits MLP, writes the resulting config, and checks its LR
against a full grid sweep at the chosen batch size.
"""


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt

    import goodfit
    from goodfit.doctor import overfit_one_batch
    from goodfit.optim.batch_size import recommend, scaled_lr
    from goodfit.recipe import load_recipe
    from goodfit.runner import build, resolve

    torch.set_num_threads(1)
    recipe = "digits-mlp"
    seeds = [0] if ctx.quick else [0, 1]
    epochs = 5 if ctx.quick else 15
    base = {"train.threads": 1, "train.epochs": epochs, "train.checkpoint_interval": 1e9,
            "train.early_stopping.patience": None}
    start = load_recipe(recipe, base)

    # 1. overfit one batch with the recipe's own model, loss and optimizer
    parts = build(resolve(start), progress=False)
    t = parts.trainer
    x, y = next(iter(t.train_loader.epoch(0)))
    probe = overfit_one_batch(t.model, t.loss_fn, t.optimizer, x[:32], y[:32])
    ctx.measure("overfit one batch: loss start -> lowest", f"{probe.initial_loss:.3f} -> {probe.final_loss:.4f} "
                                                           f"in {probe.steps} steps")
    ctx.check(probe.passed, "sanity: the model memorizes one batch of 32 (loss down to 5% of its start)",
              f"{probe.final_loss:.4f} <= {probe.target:.4f}")

    # 2. batch size from memory, gradient noise and steps per epoch
    advice = recommend(recipe, base, draws=16 if ctx.quick else 64, warmup_steps=50 if ctx.quick else 200)
    batch = advice.batch_size
    ctx.measure("gradient noise scale B_simple (after warm-up)", advice.critical_batch)
    ctx.measure("largest batch that fits", advice.fit.batch_size)
    ctx.measure("recommended batch size", batch)
    ctx.log(advice.reason)

    # 3. LR from the range test at the recipe's batch, scaled to the chosen batch
    found = [goodfit.lr_find(recipe, {**base, "seed": s}) for s in seeds]
    lr_at_base = math.exp(statistics.fmean(math.log(r.suggestion) for r in found))
    lr = scaled_lr(start.optimizer.name, lr_at_base, start.train.batch_size, batch)
    ctx.measure(f"range-test LR at batch {start.train.batch_size}", lr_at_base)
    ctx.measure(f"config LR at batch {batch} ({advice.rule} rule)", lr)
    config = {"train.batch_size": batch, "optimizer.lr": float(f"{lr:.3g}")}
    ctx.log(f"config: {' '.join(f'--set {k}={v}' for k, v in config.items())}")

    # 4. check it against a grid sweep at that batch size, the same epochs budget
    lrs = [10 ** (e / 2) for e in range(-8, 1)]  # 1e-4 ... 1: 9 LRs over 4 decades
    grid = {g: statistics.fmean(best_val_loss(recipe, {**base, "seed": s, "train.batch_size": batch, "optimizer.lr": g},
                                           ctx.out / "runs", at="final") for s in seeds) for g in lrs}
    best = min(grid, key=grid.get)
    ratio = lr / best
    ctx.table(f"grid at batch {batch}, {epochs} epochs: final validation loss", ["lr", "val loss"],
              [[f"{g:.3g}", v] for g, v in grid.items()])
    ctx.measure("grid-best LR", best)
    ctx.measure("config LR / grid-best", ratio)
    ctx.check(1 / 3 <= ratio <= 3, "the config's LR lies within 3x of the grid sweep's best LR", f"ratio {ratio:.2f}")
    config_loss = best_val_loss(recipe, {**base, **config}, ctx.out / "runs", at="final")
    ctx.measure("val loss with the config (seed 0)", config_loss)

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.semilogy(probe.losses)
    a.axhline(probe.target, color="C3", ls="--", label="5% of the start")
    a.set(xlabel="step on one batch", ylabel="loss", title="sanity: overfit one batch")
    a.legend(fontsize=8)
    b.plot(list(grid), list(grid.values()), "o-", label=f"grid, batch {batch}")
    b.axvline(lr, color="C3", ls="--", label=f"config LR {lr:.2g}")
    b.axvspan(best / 3, best * 3, color="C2", alpha=0.1, label="within 3x of the grid best")
    b.set_xscale("log")
    b.set_yscale("log")
    b.set(xlabel="learning rate", ylabel="final validation loss", title="the config against a grid sweep")
    b.legend(fontsize=8)
    ctx.figure(fig, "config_check")


LAB = Lab(id="1.3.5", title="Choosing the initial learning rate and batch size",
          question="在实际项目中，如何选择初始学习率和批量大小？有哪些实用的调试方法？ — Choosing the initial LR and batch size; "
                   "practical debugging.",
          answer=ANSWER, run=run, uses="LR finder, batch advice")
