"""1.2.1 Over- vs underfitting read off the train/val curves; the doctor's fit verdict on each.

Also defines the deliberately overfit and underfit digits runs that labs 1.1.4 and 1.2.3-1.2.6 start from."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np

from goodfit.labs import Lab, LabContext

ANSWER = r"""
Compare the two curves per epoch: the **training loss** (how well the model fits the data it
learns from) and the **validation loss** (how well it predicts data it has never seen). Their
levels against the chance-level loss (ln K for K classes: ln 10 ≈ 2.30 on digits), and the gap
between them, tell the two failures apart.

| | training loss | validation loss | gap val − train | fix |
|---|---|---|---|---|
| **underfitting** (high bias) | stays high, far from 0, flattens early | just as high, tracks the training curve | small | more capacity / LR / epochs, less regularization (1.2.4) |
| **overfitting** (high variance) | keeps falling towards 0 | bottoms out, then **rises** (U shape) | grows with every epoch | regularize, augment, more data, stop early (1.2.3) |
| **good fit** | low | low and levelling off near its minimum | small, stable | — |

The same shows in accuracy: an underfit model is mediocre on both sets; an overfit one is
(near) perfect on training data and clearly worse on validation. Two traps: training loss is
measured *with* dropout, augmentation and label smoothing (a harder task than the clean
validation pass, so it can sit above the validation loss in a healthy run), and it is averaged
over the epoch while the weights still move; for the gap, score both splits with the final
weights in eval mode, as this lab does.

goodfit's doctor reads the same curves (`doctor/rules.py`, `curve_findings`): **overfitting**
when the validation loss climbed clearly above its minimum while the training loss kept falling,
or when the delivered model's val − train gap is a large fraction of ln K; **underfitting** when
both losses of the delivered model stay above a fraction of ln K. The verdict is about the model
the run *delivers*: with `restore_best` the best epoch comes back, so an overfit that early
stopping cut off is only an `info` finding with its onset epoch; it is the verdict when the last,
overfit epoch is delivered. Each finding carries its evidence and the thresholds it crossed.

The lab trains three digits MLPs: deliberately overfit (300 training images, a fifth of their
labels wrong, 256 units without dropout or weight decay, constant LR, no early stopping, last epoch
delivered), underfit (one hidden layer of 4 units), and goodfit's `digits-mlp` recipe as shipped
(full mode adds the default recipe, `digits-cnn`).
"""

# Shared with labs 1.1.4 and 1.2.3-1.2.6: the deliberately overfit run. 300 training digits with 20% of the labels
# flipped give the network wrong labels to memorize; nothing holds it back, and the last epoch is delivered.
OVERFIT = {"data.perturb.subset": 300, "data.perturb.label_noise": 0.2, "model.width": 256, "model.dropout": 0.0,
           "optimizer.weight_decay": 0.0, "optimizer.lr": 0.001, "schedule.name": "constant", "train.batch_size": 32,
           "train.epochs": 60, "train.early_stopping.patience": None, "train.early_stopping.restore_best": False}
# ... and the underfit one: a single hidden layer of 4 units cannot represent ten digit classes well.
UNDERFIT = {"model.width": 4, "model.depth": 1}
THREADS = {"train.threads": 1}

SEEDS_QUICK, SEEDS_FULL = (0,), (0, 1, 2)
# Curve signatures the claims test (ours, independent of the doctor's thresholds, which are being calibrated):
RISE = 1.3          # overfit: the last val loss ≥ this × its minimum ...
TRAIN_DROP = 0.5    # ... while the train loss fell below this × its value at the val minimum
MEMORIZED = 0.98    # overfit: eval train accuracy (on its own, partly wrong, labels) at least this
GAP_ACC = 0.10      # ... and val accuracy at least this far below it
UNDER_ACC = 0.90    # underfit: eval train accuracy below this ...
UNDER_GAP = 0.05    # ... with val accuracy within this of it
GOOD_ACC = 0.95     # good: delivered val accuracy at least this ...
GOOD_LOSS = 0.25    # ... and delivered val loss at most this (ln 10 ≈ 2.30 is chance)


def scores(run, split: str) -> tuple[float, float]:
    """(cross-entropy, accuracy) of the run's delivered model on `split` ('train' | 'val'), in eval mode."""
    import torch
    import torch.nn.functional as F

    model = run.model
    device = next(model.parameters()).device
    x, y = getattr(run.data, f"x_{split}").to(device), getattr(run.data, f"y_{split}").to(device)
    model.eval()
    with torch.no_grad():
        out = model(x)
    return F.cross_entropy(out, y).item(), (out.argmax(1) == y).float().mean().item()


def train(recipe: str, overrides: dict, seed: int, out: Path):
    """goodfit.run with one CPU thread and the given seed."""
    import goodfit

    return goodfit.run(recipe, {**THREADS, **overrides, "seed": seed}, out=out, progress=False)


def warnings_text(run) -> str:
    """The diagnosis in one line: verdict and each warning with its evidence."""
    d = run.diagnosis
    parts = [f"{f.id} {f.evidence}" for f in d.warnings()]
    return f"{d.verdict}" + (": " + "; ".join(parts) if parts else "")


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt

    seeds = SEEDS_QUICK if ctx.quick else SEEDS_FULL
    root = ctx.out / "runs"
    shutil.rmtree(root, ignore_errors=True)  # this lab's own scratch folder
    cases = [("overfit", "digits-mlp", OVERFIT), ("underfit", "digits-mlp", UNDERFIT), ("good", "digits-mlp", {})]
    if not ctx.quick:
        cases.append(("default recipe", "digits-cnn", {}))
    runs = {(name, s): train(recipe, ov, s, root) for name, recipe, ov in cases for s in seeds}
    # the same overfit training, delivered at its best epoch instead of its last
    restored = {s: train("digits-mlp", {**OVERFIT, "train.early_stopping.restore_best": True}, s, root) for s in seeds}

    rows, sig = [], {}
    for (name, s), r in runs.items():
        vl = np.array([h["val_loss"] for h in r.history])
        tl = np.array([h["train_loss"] for h in r.history])
        tr_loss, tr_acc = scores(r, "train")
        va_loss, va_acc = scores(r, "val")
        low = int(vl.argmin())
        sig[name, s] = {"rise": vl[-1] / vl[low], "train_drop": tl[-1] / tl[low], "low": low + 1, "epochs": len(vl),
                        "tr_acc": tr_acc, "va_acc": va_acc, "va_loss": va_loss, "tr_loss": tr_loss}
        rows.append([name, s, len(vl), low + 1, vl[low], vl[-1], tr_loss, va_loss, va_loss - tr_loss, tr_acc, va_acc,
                     r.diagnosis.verdict])
    ctx.table("final weights in eval mode (delivered model); val min = lowest val loss over the epochs",
              ["run", "seed", "epochs", "val-min epoch", "val min", "val last", "train loss", "val loss", "gap",
               "train acc", "val acc", "doctor verdict"], rows)
    for name, *_ in cases:
        ctx.measure(f"{name}: train / val accuracy (mean over {len(seeds)} seed(s))",
                    f"{np.mean([sig[name, s]['tr_acc'] for s in seeds]):.3f} / "
                    f"{np.mean([sig[name, s]['va_acc'] for s in seeds]):.3f}")

    over = [sig["overfit", s] for s in seeds]
    ctx.check(all(o["rise"] >= RISE and o["train_drop"] <= TRAIN_DROP and o["low"] <= o["epochs"] // 2 for o in over),
              f"overfit curves, every seed: val loss bottoms out in the first half and ends ≥ {RISE}× its minimum "
              f"while the train loss falls below {TRAIN_DROP}× its value at that epoch",
              ", ".join(f"min @{o['low']}, ×{o['rise']:.2f} val, ×{o['train_drop']:.2f} train" for o in over))
    ctx.check(all(o["tr_acc"] >= MEMORIZED and o["tr_acc"] - o["va_acc"] >= GAP_ACC for o in over),
              f"overfit: train accuracy ≥ {MEMORIZED} (wrong labels memorized) and val accuracy ≥ {GAP_ACC:.0%} "
              "below it, every seed", ", ".join(f"{o['tr_acc']:.3f}/{o['va_acc']:.3f}" for o in over))
    under = [sig["underfit", s] for s in seeds]
    ctx.check(all(u["tr_acc"] < UNDER_ACC and abs(u["tr_acc"] - u["va_acc"]) <= UNDER_GAP for u in under),
              f"underfit: train accuracy < {UNDER_ACC} and val within {UNDER_GAP:.0%} of it (no gap: the model cannot "
              "even fit its training data), every seed",
              ", ".join(f"{u['tr_acc']:.3f}/{u['va_acc']:.3f}" for u in under))
    goods = [sig[name, s] for name, *_ in cases if name not in ("overfit", "underfit") for s in seeds]
    ctx.check(all(g["va_acc"] >= GOOD_ACC and g["va_loss"] <= GOOD_LOSS for g in goods),
              f"good fit: delivered val accuracy ≥ {GOOD_ACC} and val loss ≤ {GOOD_LOSS}, every seed",
              ", ".join(f"{g['va_acc']:.3f}/{g['va_loss']:.3f}" for g in goods))

    expected = {"overfit": "overfitting", "underfit": "underfitting", "good": "good_fit", "default recipe": "good_fit"}
    for name, recipe, _ in cases:
        rs = [runs[name, s] for s in seeds]
        healthy = expected[name] == "good_fit"
        bad = [f"seed {s}: {warnings_text(r)}" for s, r in zip(seeds, rs)
               if r.diagnosis.verdict != expected[name] or (healthy and r.diagnosis.warnings())]
        ctx.check(not bad, f"doctor label [DOCTOR CHECK]: {name} ({recipe}) gets verdict {expected[name]}"
                           + (" with no warning" if healthy else "") + ", every seed", "; ".join(bad))
    found = {s: next((f for f in restored[s].diagnosis.findings if f.id == "overfitting"), None) for s in seeds}
    bad = [f"seed {s}: {warnings_text(restored[s])}, overfitting finding {f.severity if f else None}, onset "
           f"{f.evidence.get('onset_epoch') if f else None} vs val-min epoch {sig['overfit', s]['low']}"
           for s, f in found.items()
           if restored[s].diagnosis.verdict != "good_fit" or f is None or f.severity != "info"
           or f.evidence.get("onset_epoch") != sig["overfit", s]["low"]]
    ctx.check(not bad, "doctor label [DOCTOR CHECK]: the same overfit training delivered at its best epoch "
                       "(restore_best) is good_fit, the overfit kept as an `info` finding whose onset is the val-min "
                       "epoch", "; ".join(bad))
    for f in runs["overfit", seeds[0]].diagnosis.warnings() + runs["underfit", seeds[0]].diagnosis.warnings():
        ctx.log(f"doctor, seed {seeds[0]}: {f.id} ({f.severity}) evidence {f.evidence} thresholds {f.thresholds}")

    fig, axes = plt.subplots(1, len(cases), figsize=(4.6 * len(cases), 3.9), sharey=True)
    for ax, (name, recipe, _) in zip(axes, cases):
        for s in seeds:
            h = runs[name, s].history
            ep = np.arange(1, len(h) + 1)
            lw, alpha = (1.6, 1.0) if s == seeds[0] else (0.8, 0.35)
            ax.plot(ep, [x["train_loss"] for x in h], color="tab:blue", lw=lw, alpha=alpha,
                    label="train loss" if s == seeds[0] else None)
            ax.plot(ep, [x["val_loss"] for x in h], color="tab:orange", lw=lw, alpha=alpha,
                    label="val loss" if s == seeds[0] else None)
        ax.axhline(math.log(10), color="0.5", ls=":", lw=1, label="chance (ln 10)")
        ax.set_title(f"{name} ({recipe})\ndoctor: {runs[name, seeds[0]].diagnosis.verdict}", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 2.6)
    axes[0].set_ylabel("cross-entropy")
    axes[0].legend(fontsize=8)
    fig.suptitle("telling over- from underfitting by the train/val curves (thin lines: other seeds)", fontsize=11)
    fig.tight_layout()
    ctx.figure(fig, "fit_curves")


LAB = Lab(id="1.2.1", title="Over- vs underfitting from the curves",
          question="如何从训练集和验证集的损失/精度曲线区分过拟合和欠拟合？各自的曲线特征是什么？ — Telling over- from "
                   "underfitting by train/val curves.",
          answer=ANSWER, run=run, uses="doctor fit verdict, plots")
