"""1.4.4 Other regularizers on one overfitting baseline: their effect on the generalization gap."""
from __future__ import annotations

import numpy as np

from goodfit.labs import Lab, LabContext

ANSWER = r"""
| method | what it does | why it regularizes |
|---|---|---|
| **weight decay** | w ← (1 − ηλ)w each step (AdamW: decoupled from the adaptive step) | keeps weights small: smoother, less confident functions (1.4.1, 1.4.5) |
| **early stopping** | stop when the validation loss stops improving; keep the best epoch's weights | limits how far the weights travel from their small initialization; ≈ an L2 penalty whose strength falls with training time |
| **batch normalization** | normalize each unit over the mini-batch, then scale and shift | each sample's output depends on the random batch it lands in: noise that acts like dropout; also makes the loss smoother, so larger, noisier learning rates work |
| **label smoothing** | train on targets (1 − ε)·onehot + ε/K | caps how confident the model may become (logit gaps stay finite); better calibrated, less memorization of single labels |
| **mixup** (Zhang et al. 2018) | train on λx_a + (1 − λ)x_b with target λy_a + (1 − λ)y_b, λ ~ Beta(α, α) | asks for linear behaviour between training points: a smoother decision function, vicinal instead of empirical risk |
| **cutmix** (Yun et al. 2019) | paste a box from x_b into x_a; targets mixed by the box's area | same, with every pixel still real: also teaches to use all parts of the object |
| **stochastic depth** (Huang et al. 2016) | drop whole residual branches per sample while training, rate rising with depth | an implicit ensemble of shallower nets; blocks cannot co-adapt |
| **data augmentation** | train on label-preserving transforms (shifts, crops, flips, noise) | enlarges the training set with the invariances we know the task has |
| dropout, L1/L2 | see 1.4.1–1.4.3 | |

They differ in *what* they assume (small weights, smoothness between samples, known invariances,
calibrated confidence) and combine well; the right strength is always found on validation data.

**The lab** trains one overfitting baseline, a small residual net (no normalization, no decay,
Adam, cosine schedule, 30 epochs) on 200 digits, and then the same run with one regularizer added at
a time through the recipe. It measures the final model on the clean training set and on the
validation set: the cross-entropy gap (val − train loss), the accuracy gap and the validation
scores, averaged over seeds. Only what held across the seeds we tried is asserted; the rest is
reported. Closing the gap is not the same as scoring better: on a budget this short, cutmix and
random shifts close it mostly by raising the training loss (the model underfits the harder task
and its val accuracy drops), while weight decay, early stopping and stochastic depth change it by
less than the seed-to-seed spread. Batch norm helps most, partly because it also makes this
un-normalized residual net easier to optimize.
"""

BASE = ["model.name=resnet", "model.width=16", "model.depth=4", "model.norm=none", "model.dropout=0",
        "optimizer.name=adam", "optimizer.weight_decay=0", "optimizer.lr=0.01", "schedule.name=cosine",
        "schedule.warmup=0", "train.epochs=30", "train.batch_size=50", "train.early_stopping.patience=null",
        "train.early_stopping.restore_best=false", "data.perturb.subset=200", "train.threads=1",
        "doctor.enabled=false"]
REGULARIZERS = {
    "none (baseline)": [],
    "weight decay (AdamW 0.5)": ["optimizer.name=adamw", "optimizer.weight_decay=0.5"],
    "batch norm": ["model.norm=batch"],
    "early stopping (patience 5)": ["train.early_stopping.patience=5", "train.early_stopping.restore_best=true"],
    "label smoothing 0.1": ["loss.label_smoothing=0.1"],
    "mixup α=0.4": ["data.augment=[{mixup: 0.4}]"],
    "cutmix α=1": ["data.augment=[{cutmix: 1.0}]"],
    "stochastic depth 0.3": ["model.drop_path=0.3"],
    "augmentation (±1 px shifts)": ["data.augment=[{random_crop: {padding: 1}}]"],
}
ASSERTED = ("batch norm", "label smoothing 0.1", "mixup α=0.4", "cutmix α=1")
QUICK = ("none (baseline)", "batch norm", "mixup α=0.4")


def _scores(run) -> dict:
    import torch
    import torch.nn.functional as F

    model, d = run.model, run.data
    model.eval()
    with torch.no_grad():
        tr, va = model(d.x_train), model(d.x_val)
    return {"train_loss": F.cross_entropy(tr, d.y_train).item(), "val_loss": F.cross_entropy(va, d.y_val).item(),
            "train_acc": (tr.argmax(1) == d.y_train).float().mean().item(),
            "val_acc": (va.argmax(1) == d.y_val).float().mean().item(), "epochs": len(run.history)}


def run(ctx: LabContext) -> None:
    import shutil

    import matplotlib.pyplot as plt
    import torch

    import goodfit

    torch.set_num_threads(1)
    names = list(QUICK) if ctx.quick else list(REGULARIZERS)
    seeds = [0] if ctx.quick else [0, 1]
    root = ctx.out / "runs"
    shutil.rmtree(root, ignore_errors=True)
    ctx.log(f"baseline: resnet (4 blocks, width 16, no norm), Adam lr 0.01 cosine, {20 if ctx.quick else 30} epochs, "
            "batch 50, "
            f"200 training digits; seeds {seeds}; scores of the delivered model on the clean train and val splits")
    budget = ["train.epochs=20"] if ctx.quick else []
    res = {n: [_scores(goodfit.run("digits-cnn", [*BASE, *REGULARIZERS[n], *budget, f"seed={s}"], out=root,
                                   progress=False)) for s in seeds] for n in names}

    def mean(n, key):
        return float(np.mean([r[key] for r in res[n]]))

    def gap(n, kind="loss"):
        return ([r["val_loss"] - r["train_loss"] for r in res[n]] if kind == "loss"
                else [r["train_acc"] - r["val_acc"] for r in res[n]])

    base = "none (baseline)"
    rows = [[n, float(np.mean(gap(n))), float(np.mean(gap(n, "acc"))), mean(n, "train_loss"), mean(n, "val_loss"),
             mean(n, "val_acc"), mean(n, "val_acc") - mean(base, "val_acc"), mean(n, "epochs")] for n in names]
    ctx.table(f"one regularizer at a time (mean over seeds {seeds}); CE gap = val − train cross-entropy of the "
              "delivered model, acc gap = train − val accuracy",
              ["regularizer", "CE gap", "acc gap", "train CE", "val CE", "val acc", "Δ val acc", "epochs"], rows)

    base_gap = np.array(gap(base))
    for n in (n for n in ASSERTED if n in names):
        ratio = np.array(gap(n)) / base_gap
        ctx.check(np.mean(gap(n)) < 0.6 * base_gap.mean() and np.all(ratio < 1),
                  f"{n} cuts the mean cross-entropy gap by more than 40% against the baseline, and lowers it in every "
                  "seed", f"mean {np.mean(gap(n)) / base_gap.mean():.2f}×; per seed " + " ".join(f"{r:.2f}×" for r in ratio))
    if "batch norm" in names:
        ctx.check(all(mean("batch norm", "val_acc") >= mean(n, "val_acc") for n in names),
                  "batch norm gives the best val accuracy here (it also eases the optimization of this un-normalized "
                  "residual net, not only regularizes it)", f"{mean('batch norm', 'val_acc'):.3f}")
    others = [n for n in names if n not in ASSERTED and n != base]
    if others:
        ctx.log("not asserted (effect smaller than the seed-to-seed spread on this budget): "
                + "; ".join(f"{n}: CE gap {np.mean(gap(n)):.3f} vs {np.mean(base_gap):.3f}" for n in others))

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 4.5))
    y = np.arange(len(names))
    colors = ["0.5" if n == base else ("tab:green" if n in ASSERTED else "tab:blue") for n in names]
    ax1.barh(y, [np.mean(gap(n)) for n in names], xerr=[np.std(gap(n)) for n in names], color=colors, capsize=3)
    ax1.set_yticks(y, names)
    ax1.invert_yaxis()
    ax1.set_xlabel("val − train cross-entropy (mean ± sd over seeds)")
    ax1.set_title("generalization gap (green: asserted reductions)")
    ax2.barh(y, [mean(n, "val_acc") for n in names], color=colors)
    ax2.set_yticks(y, [])
    ax2.invert_yaxis()
    ax2.set_xlim(0.7, 1.0)
    ax2.axvline(mean(base, "val_acc"), color="k", ls=":", lw=1)
    ax2.set_xlabel("val accuracy")
    ax2.set_title("validation score")
    fig.tight_layout()
    ctx.figure(fig, "regularizers_gap")


LAB = Lab(id="1.4.4", title="Other regularizers and their principles",
          question="除了L1/L2和Dropout，还有哪些常用的正则化方法？请简要说明其原理（如权重衰减、BatchNorm、早停等）。 — Other "
                   "regularizers and their principles.",
          answer=ANSWER, run=run, uses="regularizers")
