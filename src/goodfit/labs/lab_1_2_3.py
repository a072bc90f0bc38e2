"""1.2.3 Remedies for overfitting, each alone on one overfit baseline: what each buys on validation."""
from __future__ import annotations

import shutil

import numpy as np

from goodfit.labs import Lab, LabContext
from goodfit.labs.lab_1_2_1 import OVERFIT, scores, train

ANSWER = r"""
Overfitting is a model fitting its sample's noise (1.2.2); every remedy either **restricts what the
model can fit** or **gives it more (or harder) data to fit**:

| remedy | principle |
|---|---|
| **L2 / weight decay** | penalize ‖w‖² (loss + (λ/2)‖w‖², or decoupled w ← w − ηλw in AdamW): small weights mean a smoother function that cannot bend around single points; the MAP estimate under a Gaussian prior. L1 (λ‖w‖₁) drives weights to exactly 0 (sparsity). |
| **dropout** | zero each unit with probability p during training (scaled by 1/(1−p)): no unit can rely on specific others (no co-adaptation); an implicit average over 2ᴺ thinned networks. |
| **data augmentation** | train on label-preserving transformations (shifts, crops, flips, noise, mixup): more effective samples, and invariances the model no longer has to learn from data (1.2.6). |
| **early stopping** | stop when the validation loss stops improving and keep the best epoch (1.1.5): limits how far the weights travel from their small initialization, like an L2 penalty whose strength falls with training time. |
| **smaller model** | fewer units/layers: less capacity to memorize (1.2.2), at the risk of underfitting. |
| **more data** | the same capacity spread over more samples; the gap shrinks roughly like √(complexity/n). |
| **label smoothing** | train on targets (1 − ε) for the true class and ε/(K−1) for the others: bounded logits, no reward for the extreme confidence that memorizing a (possibly wrong) label needs. |

Others in the same spirit: batch normalization's noise, smaller batches, ensembling, pre-training,
feature selection, cleaning the labels (goodfit flags suspicious ones: `label_noise`).

**The lab** takes lab 1.2.1's deliberately overfit run (300 digits, a fifth of their labels wrong,
a 256-wide MLP, no regularization, no early stopping, last epoch delivered) and changes one thing at
a time, scoring the delivered model's validation accuracy. The strengths are ordinary choices, not
tuned: weight decay 1.0 (AdamW, decoupled; LR 10⁻³), L2 penalty 0.01, dropout 0.5, random shifts of
±1 pixel, early stopping with patience 5, width 32 instead of 256, 1,000 training samples instead of
300 (same noise rate), label smoothing 0.1.
"""

SEEDS_QUICK, SEEDS_FULL = (0,), (0, 1, 2)
EPOCHS_QUICK = 30  # quick mode trains the baseline (and each remedy) for half as long: it overfits already
REMEDIES = (
    ("weight decay 1.0 (AdamW)", {"optimizer.weight_decay": 1.0}),
    ("L2 penalty 0.01", {"regularization.l2": 0.01}),
    ("dropout 0.5", {"model.dropout": 0.5}),
    ("augmentation: ±1 px shifts", {"data.augment": [{"random_crop": 1}]}),
    ("early stopping (patience 5)", {"train.early_stopping.patience": 5, "train.early_stopping.restore_best": True}),
    ("smaller model (width 32)", {"model.width": 32}),
    ("more data (1,000 samples)", {"data.perturb.subset": 1000}),
    ("label smoothing 0.1", {"loss.label_smoothing": 0.1}),
)
MOST = 2 / 3  # "most remedies": at least this share raise the mean val accuracy


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt

    seeds = SEEDS_QUICK if ctx.quick else SEEDS_FULL
    base = {**OVERFIT, "doctor.enabled": False, **({"train.epochs": EPOCHS_QUICK} if ctx.quick else {})}
    root = ctx.out / "runs"
    shutil.rmtree(root, ignore_errors=True)  # this lab's own scratch folder

    res = {}
    for name, ov in (("baseline (overfit)", {}), *REMEDIES):
        for s in seeds:
            r = train("digits-mlp", {**base, **ov}, s, root)
            _, tr_acc = scores(r, "train")
            va_loss, va_acc = scores(r, "val")
            res[name, s] = {"val_acc": va_acc, "val_loss": va_loss, "train_acc": tr_acc, "epochs": len(r.history),
                            "curve": [h["val_accuracy"] for h in r.history]}
    names = ["baseline (overfit)", *(n for n, _ in REMEDIES)]

    def mean(name, key):
        return float(np.mean([res[name, s][key] for s in seeds]))

    b_acc, b_gap = mean(names[0], "val_acc"), mean(names[0], "train_acc") - mean(names[0], "val_acc")
    rows, gains = [], {}
    for name in names:
        gains[name] = [res[name, s]["val_acc"] - res[names[0], s]["val_acc"] for s in seeds]
        gap = mean(name, "train_acc") - mean(name, "val_acc")
        rows.append([name, mean(name, "val_acc"), float(np.mean(gains[name])), min(gains[name]), mean(name, "val_loss"),
                     mean(name, "train_acc"), gap, round(mean(name, "epochs"), 1)])
    ctx.table(f"each remedy alone on the overfit baseline (delivered model, eval mode; mean over {len(seeds)} seed(s); "
              "train accuracy is on the partly wrong training labels)",
              ["run", "val acc", "val gain", "worst seed gain", "val loss", "train acc", "train − val acc", "epochs"],
              rows)
    ctx.measure("baseline val accuracy", b_acc)
    improved = [n for n in names[1:] if np.mean(gains[n]) > 0]
    ctx.measure("remedies that raise the mean val accuracy", f"{len(improved)} of {len(REMEDIES)}")
    ctx.check(len(improved) >= MOST * len(REMEDIES),
              f"most remedies (≥ {MOST:.0%}) raise the val accuracy of the overfit baseline, mean over {len(seeds)} "
              "seed(s)", "not improving: " + (", ".join(n for n in names[1:] if n not in improved) or "none"))
    best = max(names[1:], key=lambda n: np.mean(gains[n]))
    ctx.check(np.mean(gains[best]) >= 0.03, "the best single remedy gains at least 3 points of val accuracy",
              f"{best}: {np.mean(gains[best]):+.3f}")
    narrowed = [n for n in names[1:] if mean(n, "train_acc") - mean(n, "val_acc") < b_gap]
    ctx.check(len(narrowed) >= MOST * len(REMEDIES),
              f"the mechanism: most remedies (≥ {MOST:.0%}) narrow the train − val accuracy gap (memorize less)",
              f"baseline gap {b_gap:.3f}; not narrowed: " + (", ".join(n for n in names[1:] if n not in narrowed)
                                                             or "none"))

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.6), gridspec_kw={"width_ratios": [1.2, 1]})
    order = sorted(names[1:], key=lambda n: np.mean(gains[n]))
    y = np.arange(len(order))
    ax1.barh(y, [np.mean(gains[n]) for n in order], color=["tab:green" if np.mean(gains[n]) > 0 else "tab:red"
                                                          for n in order])
    for k, n in enumerate(order):
        ax1.scatter(gains[n], [k] * len(seeds), color="k", s=10, zorder=3)
    ax1.set_yticks(y, order, fontsize=8)
    ax1.axvline(0, color="k", lw=0.8)
    ax1.set_xlabel(f"val accuracy − baseline's ({b_acc:.3f}); dots: seeds")
    ax1.set_title("one remedy at a time")
    for name in ("baseline (overfit)", "early stopping (patience 5)", "dropout 0.5", "augmentation: ±1 px shifts"):
        c = res[name, seeds[0]]["curve"]
        ax2.plot(np.arange(1, len(c) + 1), c, label=name, lw=1.8 if name.startswith("baseline") else 1.2)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("val accuracy")
    ax2.set_title(f"val accuracy per epoch (seed {seeds[0]})")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    ctx.figure(fig, "remedies")


LAB = Lab(id="1.2.3", title="Remedies for overfitting",
          question="针对过拟合问题，有哪些常用的解决方法？请分别说明其核心原理。 — Remedies for overfitting and their principles.",
          answer=ANSWER, run=run, uses="regularizers, augmentation")
