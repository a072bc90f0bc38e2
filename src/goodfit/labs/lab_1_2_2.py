"""1.2.2 Root cause of overfitting: the generalization gap over a capacity × training-set-size grid."""
from __future__ import annotations

import math
import shutil

import numpy as np

from goodfit.labs import Lab, LabContext
from goodfit.labs.lab_1_2_1 import scores, train

ANSWER = r"""
**Root cause.** Training minimizes the *empirical* risk, the average loss over n samples, while
we want the *expected* risk over the whole distribution. The difference, the **generalization
gap** E[L] − L̂ₙ, is what the model gains by fitting the particulars of its sample: sampling
noise, label noise, accidental correlations, which do not recur in new data. How much it can
fit them is set by its **capacity** relative to the **amount of data**: classical bounds have the
form gap ≲ √(complexity / n) (VC dimension, Rademacher complexity, parameter norms), and a model
that can memorize the n samples can drive L̂ₙ to 0 whatever their labels (Zhang et al., 2017,
trained ImageNet networks to zero training error on random labels). Overfitting is this gap
dominating: capacity large for the data and the training left free to use it.

**Common scenarios.**
- small data for the model: a few hundred samples for a network with 10⁵ weights, few samples per
  class, many features per sample (p ≫ n);
- noisy or wrong labels, outliers: memorizing them is pure gap;
- training too long without regularization, early stopping or augmentation;
- a validation set that is small or re-used for many tuning decisions (overfitting *to* it);
- train and test drawn differently (time, site, device): not overfitting in the narrow sense,
  but the same symptom, a model much better on training data.

**The lab** makes the sample's peculiarities explicit: 20% of the training labels are wrong
(validation stays clean), so fitting them is pure gap. It trains the digits MLP (two hidden layers
of width w, no dropout, no weight decay, constant LR, the same number of optimizer steps for every
cell, last weights delivered) on n training samples and measures the gap with the final weights
in eval mode: val loss − train loss. The gap grows with capacity, because a wider network can
memorize more of the wrong labels, and shrinks with data, because the same capacity spread over
more samples can memorize a smaller share of them. It can be negative: a model that ignores the
noise pays for it on the noisy training labels, not on the clean validation ones. (Past the point
where every network memorizes its whole sample, the gap in *loss* stops growing with width on
clean data — over-parameterized networks generalize better than the classical picture predicts.)
"""

NOISE = 0.2
WIDTHS_QUICK, WIDTHS_FULL = (4, 32, 256), (4, 16, 64, 256)
SIZES_QUICK, SIZES_FULL = (100, 1000), (100, 300, 1000)
SEEDS_QUICK, SEEDS_FULL = (0,), (0, 1, 2)
STEPS_QUICK, STEPS_FULL = 300, 400
BATCH = 32
BASE = {"data.perturb.label_noise": NOISE, "model.dropout": 0.0, "optimizer.weight_decay": 0.0, "optimizer.lr": 0.003,
        "schedule.name": "constant", "train.batch_size": BATCH, "train.early_stopping.patience": None,
        "train.early_stopping.restore_best": False, "doctor.enabled": False}


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt

    widths = WIDTHS_QUICK if ctx.quick else WIDTHS_FULL
    sizes = SIZES_QUICK if ctx.quick else SIZES_FULL
    seeds = SEEDS_QUICK if ctx.quick else SEEDS_FULL
    steps = STEPS_QUICK if ctx.quick else STEPS_FULL
    root = ctx.out / "runs"
    shutil.rmtree(root, ignore_errors=True)  # this lab's own scratch folder

    gap = np.zeros((len(widths), len(sizes), len(seeds)))
    val_acc = np.zeros_like(gap)
    train_acc = np.zeros_like(gap)
    for i, w in enumerate(widths):
        for j, n in enumerate(sizes):
            for k, s in enumerate(seeds):
                r = train("digits-mlp", {**BASE, "model.width": w, "data.perturb.subset": n,
                                         "train.epochs": math.ceil(steps * BATCH / n)}, s, root)
                tr_loss, train_acc[i, j, k] = scores(r, "train")
                va_loss, val_acc[i, j, k] = scores(r, "val")
                gap[i, j, k] = va_loss - tr_loss
    g = gap.mean(-1)
    ctx.table(f"generalization gap (val − train loss, final weights, mean over {len(seeds)} seed(s)); rows: width, "
              "columns: training samples", ["width \\ n", *sizes], [[w, *g[i]] for i, w in enumerate(widths)])
    ctx.table("val accuracy (mean over seeds)", ["width \\ n", *sizes],
              [[w, *val_acc.mean(-1)[i]] for i, w in enumerate(widths)])
    ctx.table("train accuracy on the (20% wrong) training labels: how much was memorized", ["width \\ n", *sizes],
              [[w, *train_acc.mean(-1)[i]] for i, w in enumerate(widths)])

    by_width, by_size = g.mean(1), g.mean(0)
    ctx.measure("gap by width (mean over sizes)", ", ".join(f"{w}: {v:.3f}" for w, v in zip(widths, by_width)))
    ctx.measure("gap by training-set size (mean over widths)",
                ", ".join(f"{n}: {v:.3f}" for n, v in zip(sizes, by_size)))
    ctx.check(all(b > a for a, b in zip(by_width, by_width[1:])),
              f"the gap grows with capacity: averaged over sizes and {len(seeds)} seed(s) it rises strictly with width")
    ctx.check(all(b < a for a, b in zip(by_size, by_size[1:])),
              f"the gap shrinks with data: averaged over widths and {len(seeds)} seed(s) it falls strictly with n")
    ctx.check(all(g[i, 0] > g[i, -1] for i in range(len(widths))),
              f"at every width, {sizes[0]} samples leave a larger gap than {sizes[-1]}",
              ", ".join(f"w{w}: {g[i, 0]:.2f} > {g[i, -1]:.2f}" for i, w in enumerate(widths)))
    ctx.check(all(g[-1, j] > g[0, j] for j in range(len(sizes))),
              f"at every size, width {widths[-1]} leaves a larger gap than width {widths[0]}",
              ", ".join(f"n{n}: {g[-1, j]:.2f} > {g[0, j]:.2f}" for j, n in enumerate(sizes)))
    memorized = train_acc.mean(-1)
    ctx.check(memorized[-1, 0] > 1 - NOISE / 2 > memorized[0, 0],
              f"the mechanism: at n = {sizes[0]} the widest network fits the training labels beyond the "
              f"{1 - NOISE:.0%} that are right (memorizes wrong ones), the narrowest does not",
              f"train accuracy {memorized[-1, 0]:.3f} vs {memorized[0, 0]:.3f}")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    lim = np.abs(g).max()
    im = ax1.imshow(g, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    for i in range(len(widths)):
        for j in range(len(sizes)):
            ax1.text(j, i, f"{g[i, j]:.2f}", ha="center", va="center", fontsize=9,
                     color="white" if abs(g[i, j]) > 0.6 * lim else "black")
    ax1.set_xticks(range(len(sizes)), sizes)
    ax1.set_yticks(range(len(widths)), widths)
    ax1.set_xlabel("training samples n")
    ax1.set_ylabel("hidden width (2 layers)")
    ax1.set_title("generalization gap: val − train loss")
    fig.colorbar(im, ax=ax1)
    for j, n in enumerate(sizes):
        ax2.errorbar(widths, g[:, j], yerr=gap[:, j].std(-1), marker="o", capsize=3, label=f"n = {n}")
    ax2.set_xscale("log", base=2)
    ax2.axhline(0, color="0.5", lw=0.8)
    ax2.set_xlabel("hidden width")
    ax2.set_ylabel("val − train loss")
    ax2.set_title(f"gap vs capacity ({int(NOISE * 100)}% training labels wrong, {steps} steps)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    ctx.figure(fig, "gap_grid")


LAB = Lab(id="1.2.2", title="Root cause of overfitting",
          question="过拟合产生的根本原因是什么？常见的场景有哪些？ — Root cause and common scenarios of overfitting.",
          answer=ANSWER, run=run, uses="data subset knob, models")
