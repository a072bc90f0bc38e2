"""1.2.6 Data augmentation against overfitting, and why it does not cure underfitting."""
from __future__ import annotations

import shutil

import numpy as np

from goodfit.labs import Lab, LabContext
from goodfit.labs.lab_1_2_1 import OVERFIT, UNDERFIT, scores, train

ANSWER = r"""
**Why it helps overfitting.** Augmentation trains on label-preserving transformations T(x) of the
samples (shifts, crops, flips, noise, colour changes, mixup): it enlarges the effective training
set with data drawn from around each sample, and states an invariance (f(T(x)) should equal f(x))
that the model would otherwise have to learn from examples. Both attack the cause of overfitting
(1.2.2): a sample seen in a different form every epoch cannot be memorized pixel for pixel, so the
model must use features that survive the transformations, and a wrong label attached to many
different-looking inputs is hard to fit. In expectation it is a regularizer: training on x + ε
with small Gaussian ε is, to second order, training with a penalty on the gradient norm
(Bishop, 1995, Tikhonov regularization). It trades a higher training loss for a lower gap.

**Does it help underfitting? No.** Underfitting means the model cannot fit even the clean training
data (1.2.4); augmentation makes the training task *harder* (more varied inputs, the same
capacity), so the training score stays the same or falls, and with it the validation score. Fix
the capacity or the optimization first, then augment. (Transformations that teach an invariance
the architecture lacks can help a model that is limited by data, not capacity; and an
augmentation that produces inputs the test distribution never contains — shifting digits that are
always centred — can hurt even an overfit model.)

**The lab** applies the same augmentation, random shifts of up to ±1 pixel (`random_crop` with
padding 1, on every batch), to lab 1.2.1's overfit MLP (300 digits, a fifth of the labels wrong)
and to its underfit MLP (4 hidden units), and compares train and val accuracy with and without it.
Full mode repeats both with Gaussian input noise (σ = 0.3 of the normalized scale) and shows the
clean 200-sample overfit MLP, where the digits' fixed centring makes shifts a poor invariance.
"""

SEEDS_QUICK, SEEDS_FULL = (0,), (0, 1, 2)
EPOCHS_QUICK = 30  # quick mode trains the overfit baseline for half as long: it overfits already
SHIFT = {"data.augment": [{"random_crop": 1}]}
NOISE = {"data.augment": [{"noise": 0.3}]}
CLEAN_OVERFIT = {**OVERFIT, "data.perturb.subset": 200, "data.perturb.label_noise": 0.0}
TOL = 0.01  # "does not raise the train score": the mean train accuracy rises by at most this


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt

    seeds = SEEDS_QUICK if ctx.quick else SEEDS_FULL
    overfit = {**OVERFIT, "doctor.enabled": False, **({"train.epochs": EPOCHS_QUICK} if ctx.quick else {})}
    models = [("overfit", overfit), ("underfit", UNDERFIT)]
    augments = [("±1 px shifts", SHIFT)] + ([] if ctx.quick else [("Gaussian noise 0.3", NOISE)])
    if not ctx.quick:
        models.append(("overfit, clean (200 samples)", {**CLEAN_OVERFIT, "doctor.enabled": False}))
    root = ctx.out / "runs"
    shutil.rmtree(root, ignore_errors=True)  # this lab's own scratch folder

    res = {}
    for model, ov in models:
        for aug, extra in [("none", {}), *augments]:
            if model.startswith("overfit, clean") and aug != "none" and extra is not SHIFT:
                continue  # the clean model is shown with shifts only
            for s in seeds:
                r = train("digits-mlp", {**ov, **extra}, s, root)
                res[model, aug, s] = {"train": scores(r, "train")[1], "val": scores(r, "val")[1],
                                      "curve": [(h["train_loss"], h["val_loss"]) for h in r.history]}

    def mean(model, aug, key):
        return float(np.mean([res[model, aug, s][key] for s in seeds]))

    rows = []
    for model, _ in models:
        for aug, _ in [("none", {}), *augments]:
            if (model, aug, seeds[0]) not in res:
                continue
            dv = [res[model, aug, s]["val"] - res[model, "none", s]["val"] for s in seeds]
            dt = [res[model, aug, s]["train"] - res[model, "none", s]["train"] for s in seeds]
            rows.append([model, aug, mean(model, aug, "train"), float(np.mean(dt)), mean(model, aug, "val"),
                         float(np.mean(dv)), min(dv)])
    ctx.table(f"train/val accuracy with the final weights (eval mode, clean inputs), mean over {len(seeds)} seed(s); "
              "the overfit model's train accuracy is on its partly wrong labels",
              ["model", "augmentation", "train acc", "Δ train", "val acc", "Δ val", "worst seed Δ val"], rows)

    for aug, extra in augments:
        dv = [res["overfit", aug, s]["val"] - res["overfit", "none", s]["val"] for s in seeds]
        ctx.check(np.mean(dv) > 0 and min(dv) > -TOL,
                  f"augmentation ({aug}) raises the overfit model's val accuracy (mean over {len(seeds)} seed(s); no "
                  f"seed loses more than {TOL:.0%})", ", ".join(f"{d:+.3f}" for d in dv))
        dt = mean("overfit", aug, "train") - mean("overfit", "none", "train")
        if extra is SHIFT:  # noise leaves the memorized training set almost intact: measured, not asserted
            ctx.check(dt < 0, f"... by fitting less of the training set: its train accuracy falls ({aug})",
                      f"{dt:+.3f}")
        else:
            ctx.measure(f"overfit model: train accuracy change with {aug}", dt)
        dt = mean("underfit", aug, "train") - mean("underfit", "none", "train")
        dv = mean("underfit", aug, "val") - mean("underfit", "none", "val")
        ctx.check(dt <= TOL and dv <= TOL,
                  f"augmentation ({aug}) does not raise the underfit model's train accuracy (nor its val accuracy): "
                  f"Δ ≤ {TOL:.0%} on the mean over {len(seeds)} seed(s)", f"train {dt:+.3f}, val {dv:+.3f}")
    if not ctx.quick:
        clean = "overfit, clean (200 samples)"
        ctx.measure("clean 200-sample overfit MLP: val accuracy change with ±1 px shifts (not asserted)",
                    mean(clean, "±1 px shifts", "val") - mean(clean, "none", "val"))

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), gridspec_kw={"width_ratios": [1.1, 1, 1]})
    labels = [f"{m}\n{a}" for m, a, *_ in rows]
    x = np.arange(len(rows))
    axes[0].bar(x - 0.2, [r[2] for r in rows], 0.4, label="train acc", color="tab:blue")
    axes[0].bar(x + 0.2, [r[4] for r in rows], 0.4, label="val acc", color="tab:orange")
    axes[0].set_xticks(x, labels, fontsize=6.5, rotation=30, ha="right")
    axes[0].set_ylim(0, 1.05)
    axes[0].set_title("accuracy with and without augmentation")
    axes[0].legend(fontsize=8)
    for ax, model in zip(axes[1:], ("overfit", "underfit")):
        for aug, color in (("none", "0.4"), ("±1 px shifts", "tab:green")):
            c = np.array(res[model, aug, seeds[0]]["curve"])
            ep = np.arange(1, len(c) + 1)
            ax.plot(ep, c[:, 0], color=color, ls="--", lw=1, label=f"{aug}: train")
            ax.plot(ep, c[:, 1], color=color, lw=1.6, label=f"{aug}: val")
        ax.set_title(f"{model} model (seed {seeds[0]})")
        ax.set_xlabel("epoch")
        ax.set_ylabel("cross-entropy")
        ax.legend(fontsize=7)
    fig.tight_layout()
    ctx.figure(fig, "augmentation")


LAB = Lab(id="1.2.6", title="Data augmentation, over- and underfitting",
          question="数据增强为什么能缓解过拟合？它对欠拟合问题是否有帮助？为什么？ — Why augmentation helps overfitting; does "
                   "it help underfitting?",
          answer=ANSWER, run=run, uses="augmentation")
