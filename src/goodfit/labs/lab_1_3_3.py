"""1.3.3 Batch size and LR: fixed vs linearly vs sqrt-scaled LR across batch sizes at a fixed epoch budget."""
from __future__ import annotations

import shutil

import numpy as np

from goodfit.labs import Lab, LabContext

ANSWER = r"""
Yes. An SGD step with batch B and LR η moves θ ← θ − η·G_B, where G_B has mean G and covariance
Σ/B. Two things change with B:

- **Progress per epoch.** An epoch has N/B steps. With η fixed, doubling B halves the number of
  updates and so (for small η, where k steps of η ≈ one step of kη) roughly halves the distance
  travelled per epoch: at a fixed epoch budget larger batches underfit.
- **Noise per step.** The update's noise has covariance η²Σ/B. Over the N/B steps of an epoch,
  SGD behaves like a diffusion whose "temperature" is ∝ **η/B** (Mandt et al. 2017; Smith & Le 2018).

Keeping the training trajectory (per epoch) the same when B changes therefore means keeping η/B
constant: the **linear scaling rule** η = η₀·B/B₀ (Goyal et al. 2017; with a warm-up, since large η is
unstable early). It holds while B is below the critical batch B_crit ≈ tr Σ/|G|²: beyond it the noise
is no longer what limits the step, the curvature is (η < 2/λ_max), and larger η diverges
(McCandlish et al. 2018: η_opt(B) = η_max/(1 + B_noise/B) saturates).

The **square-root rule** η = η₀·√(B/B₀) keeps the update's noise variance η²·tr Σ/B constant
(Krizhevsky 2014; Hoffer et al. 2017). It is the matching rule for adaptive optimizers (Adam,
AdamW, RMSprop), whose step is normalized by √v and so scales differently with the gradient noise
(Malladi et al. 2022); for plain SGD it under-corrects.

So: when you change B, rescale η (linear for SGD, sqrt for Adam-type), warm up when η grows a lot,
and stop scaling near B_crit (`goodfit batch-size` estimates it and applies the rule).

**The lab.** digits-mlp with SGD (momentum 0.9, constant LR, no dropout or weight decay), trained for
the same number of epochs at each batch size with the LR fixed at η₀ = 0.01 (tuned for B₀ = 16),
scaled linearly, or scaled by √(B/B₀); seeds averaged.
"""

BASE = ["train.threads=1", "schedule.name=constant", "train.early_stopping.patience=null", "optimizer.name=sgd",
        "optimizer.momentum=0.9", "optimizer.weight_decay=0", "model.dropout=0"]
BASE_LR, BASE_BATCH = 0.01, 16
SEEDS_QUICK, SEEDS_FULL = [0, 1], [0, 1, 2]
# measured over seeds 0-3: the spread of final train loss across B was ~2.0 with the fixed LR, 0.26 (full) and
# 1.05-1.13 (quick: 5 epochs) with sqrt scaling, 0.08-0.18 with linear scaling
SQRT_GAIN, LINEAR_GAIN = 1.5, 4.0


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt
    import torch

    import goodfit
    from goodfit.optim.batch_size import linear_scaled_lr, sqrt_scaled_lr

    torch.set_num_threads(1)
    batches = [16, 64, 256] if ctx.quick else [16, 32, 64, 128, 256, 512]
    seeds = SEEDS_QUICK if ctx.quick else SEEDS_FULL
    epochs = 5 if ctx.quick else 10
    rules = {"fixed": lambda b: BASE_LR, "sqrt": lambda b: sqrt_scaled_lr(BASE_LR, BASE_BATCH, b),
             "linear": lambda b: linear_scaled_lr(BASE_LR, BASE_BATCH, b)}
    runs_root = ctx.out / "runs"
    shutil.rmtree(runs_root, ignore_errors=True)  # this lab's own scratch folder

    cache: dict[tuple[float, int], tuple[float, float, float]] = {}  # (lr, B) -> mean final (train, val loss, val acc)

    def train(lr: float, b: int):
        if (lr, b) not in cache:  # at B₀ all rules give η₀: one set of runs
            finals = []
            for seed in seeds:
                r = goodfit.run("digits-mlp", [*BASE, f"optimizer.lr={lr}", f"train.batch_size={b}",
                                               f"train.epochs={epochs}", f"seed={seed}"], out=runs_root, progress=False)
                h = r.history[-1]
                finals.append((h["train_loss"], h["val_loss"], h["val_accuracy"]))
            cache[lr, b] = tuple(np.mean(finals, axis=0))
        return cache[lr, b]

    res = {rule: {b: train(f(b), b) for b in batches} for rule, f in rules.items()}
    rows, spread = [], {}
    for rule, f in rules.items():
        train_l = [res[rule][b][0] for b in batches]
        val_l = [res[rule][b][1] for b in batches]
        spread[rule] = (max(train_l) - min(train_l), max(val_l) - min(val_l))
        rows += [[rule, b, f(b), f(b) / b, *res[rule][b]] for b in batches]
    ctx.table(f"final losses after {epochs} epochs, mean over {len(seeds)} seed(s)",
              ["LR rule", "B", "LR", "LR/B", "train loss (last epoch)", "val loss", "val acc"], rows)
    ctx.table("spread across batch sizes (max − min)", ["LR rule", "train loss", "val loss"],
              [[rule, *spread[rule]] for rule in rules])

    fixed, sq, lin = spread["fixed"][0], spread["sqrt"][0], spread["linear"][0]
    ctx.measure("train-loss spread: fixed / sqrt / linear", f"{fixed:.3f} / {sq:.3f} / {lin:.3f}")
    ctx.check(res["fixed"][batches[-1]][0] > 4 * res["fixed"][batches[0]][0],
              f"with a fixed LR, larger batches underfit at a fixed epoch budget: final train loss at B={batches[-1]} "
              f"> 4× that at B={batches[0]}",
              f"{res['fixed'][batches[-1]][0]:.3f} vs {res['fixed'][batches[0]][0]:.3f}")
    ctx.check(sq < fixed / SQRT_GAIN and lin < fixed / LINEAR_GAIN,
              f"scaled LR keeps the final loss flatter across batch sizes: the spread (max − min over B) of final "
              f"train loss is ≥ {SQRT_GAIN:g}× smaller with sqrt scaling and ≥ {LINEAR_GAIN:g}× smaller with linear "
              "scaling than with the fixed LR",
              f"{fixed:.3f} → {sq:.3f} (sqrt), {lin:.3f} (linear)")
    ctx.check(spread["sqrt"][1] < spread["fixed"][1] and spread["linear"][1] < spread["fixed"][1],
              "the same holds for the validation loss (smaller spread with either scaling rule)",
              f"{spread['fixed'][1]:.3f} → {spread['sqrt'][1]:.3f}, {spread['linear'][1]:.3f}")
    ctx.check(lin <= sq, "for SGD the linear rule (constant LR/B, its noise temperature) is the flatter of the two",
              f"{lin:.3f} ≤ {sq:.3f}")

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for rule, marker in zip(rules, "osD"):
        axes[0].plot(batches, [rules[rule](b) for b in batches], marker + "-", label=rule)
        axes[1].plot(batches, [res[rule][b][0] for b in batches], marker + "-", label=rule)
        axes[2].plot(batches, [res[rule][b][1] for b in batches], marker + "-", label=rule)
    axes[0].set(xscale="log", yscale="log", xlabel="batch size B", ylabel="LR", title=f"LR (η₀ = {BASE_LR} at B₀ = 16)")
    axes[1].set(xscale="log", yscale="log", xlabel="batch size B", ylabel="final train loss",
                title=f"train loss after {epochs} epochs")
    axes[2].set(xscale="log", yscale="log", xlabel="batch size B", ylabel="final val loss", title="val loss")
    for ax in axes:
        ax.set_xticks(batches, [str(b) for b in batches], minor=False)
        ax.xaxis.set_minor_locator(plt.NullLocator())
        ax.legend(fontsize=8)
    fig.tight_layout()
    ctx.figure(fig, "batch_size_lr_scaling")


LAB = Lab(id="1.3.3", title="Batch size and learning rate",
          question="批量大小和学习率之间是否存在关联？在调整批量大小时，为什么通常需要同步调整学习率？ — Are batch size and LR "
                   "related; why rescale LR with batch size?",
          answer=ANSWER, run=run, uses="scaling rules")
