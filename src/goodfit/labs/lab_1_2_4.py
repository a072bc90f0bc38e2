"""1.2.4 Causes of underfitting, each with its remedy: four underfit baselines, the fix raises the train score."""
from __future__ import annotations

import json
import shutil

import numpy as np

from goodfit.labs import Lab, LabContext
from goodfit.labs.lab_1_2_1 import UNDERFIT, scores, train

ANSWER = r"""
A model **underfits** when it cannot fit even its training data: training and validation error
are both high and close together (high bias). The core cause is that the function the training
*reaches* is too simple for the data, either because the model cannot represent a better one or
because the optimization does not get there:

| cause | remedy |
|---|---|
| **too little capacity**: too few units/layers, an architecture without the right inductive bias (an MLP for images, no recurrence for sequences) | a wider/deeper model, a better-suited architecture |
| **too much regularization**: weight decay, dropout, label smoothing or augmentation so strong that fitting the data costs more than it gains | weaken it (regularize only once the model fits) |
| **optimization that does not get there**: LR too low (tiny steps) or too high (bouncing, dead units), bad initialization, vanishing gradients, unnormalized inputs | tune the LR (`goodfit lr-find`), schedule, normalization, initialization (1.3, 1.4) |
| **too little training**: stopped after a few epochs, or early stopping with too little patience | train longer |
| **uninformative inputs**: the features do not determine the target (noise, missing signal) | better features, more informative data; a bigger model does not help |

Order of work: first get the training error down (capacity, optimization, training time),
then close the gap to validation (1.2.3). A training score that stays low whatever the model
size points at the data or the optimization, not the capacity. Regularization and augmentation
never raise the training score (1.2.6).

**The lab** trains four underfit versions of goodfit's digits MLP — a single hidden layer of 4 units;
weight decay 30 (each AdamW step shrinks the weights by ηλ = 9%); Adam at LR 10⁻⁵; a single epoch — and
the matching remedy for each: 64 units; the recipe's weight decay 0.01; its LR 3·10⁻³; its 30 epochs
(with early stopping). The train score is the accuracy on the training split with the final
weights in eval mode.
"""

SEEDS_QUICK, SEEDS_FULL = (0,), (0, 1, 2)
CASES = (  # (cause, underfit baseline, remedy)
    ("too little capacity (4 units)", UNDERFIT, {**UNDERFIT, "model.width": 64}),
    ("too much regularization (weight decay 30)", {"optimizer.weight_decay": 30.0}, {}),
    ("LR too low (1e-5)", {"optimizer.lr": 1e-5}, {}),
    ("too few epochs (1)", {"train.epochs": 1}, {}),
)
GAIN = 0.05  # every remedy raises the train accuracy by at least this much, every seed


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt

    seeds = SEEDS_QUICK if ctx.quick else SEEDS_FULL
    root = ctx.out / "runs"
    shutil.rmtree(root, ignore_errors=True)  # this lab's own scratch folder
    cache: dict[tuple[str, int], dict] = {}

    def fit(overrides: dict, seed: int) -> dict:
        key = (json.dumps(overrides, sort_keys=True), seed)  # three remedies are the recipe as shipped: train it once
        if key not in cache:
            r = train("digits-mlp", overrides, seed, root)
            cache[key] = {"train": scores(r, "train"), "val": scores(r, "val"), "diagnosis": r.diagnosis,
                          "history": r.history}
        return cache[key]

    res = {(cause, s): (fit(bad, s), fit(fix, s)) for cause, bad, fix in CASES for s in seeds}
    rows = []
    for (cause, s), (base, fixed) in res.items():
        rx = next((p["recipe_patch"] for f in base["diagnosis"].warnings() if f.id == "underfitting"
                   for p in f.prescription[:1]), {})
        rows.append([cause, s, base["train"][1], fixed["train"][1], base["val"][1], fixed["val"][1], base["train"][0],
                     base["diagnosis"].verdict, fixed["diagnosis"].verdict, rx])
    ctx.table("underfit baseline → remedy (train/val accuracy with the final weights, eval mode); the doctor's "
              "verdicts and its first prescription for the underfit run",
              ["cause", "seed", "train acc", "→ remedy", "val acc", "→ remedy", "train loss", "doctor", "→ remedy",
               "doctor's prescription"], rows)

    for cause, _, _ in CASES:
        gains = [res[cause, s][1]["train"][1] - res[cause, s][0]["train"][1] for s in seeds]
        vgains = [res[cause, s][1]["val"][1] - res[cause, s][0]["val"][1] for s in seeds]
        ctx.measure(f"{cause}: train accuracy gain of the remedy (mean)", float(np.mean(gains)))
        ctx.check(min(gains) >= GAIN and min(vgains) > 0,
                  f"{cause}: the remedy raises the train accuracy by ≥ {GAIN:.0%} (and the val accuracy), every seed",
                  ", ".join(f"train {g:+.3f} val {v:+.3f}" for g, v in zip(gains, vgains)))
    under = [(cause, s, base["train"][1], base["val"][1]) for (cause, s), (base, _) in res.items()]
    ctx.check(all(tr < 0.9 and abs(tr - va) < 0.08 for _, _, tr, va in under),
              "every baseline underfits by its curves: train accuracy < 0.9 with val within 8 points of it",
              ", ".join(f"{tr:.2f}/{va:.2f}" for _, _, tr, va in under))
    bad = [f"{cause} seed {s}: {base['diagnosis'].verdict} "
           + "; ".join(f"{f.id} {f.evidence}" for f in base["diagnosis"].warnings())
           for (cause, s), (base, _) in res.items() if base["diagnosis"].verdict != "underfitting"]
    ctx.check(not bad, "doctor label [DOCTOR CHECK]: every underfit baseline gets verdict underfitting, every seed",
              " | ".join(bad))
    bad = [f"{cause} seed {s}: " + "; ".join(f"{f.id} {f.evidence}" for f in fixed["diagnosis"].warnings())
           for (cause, s), (_, fixed) in res.items() if fixed["diagnosis"].verdict == "underfitting"]
    ctx.check(not bad, "doctor label [DOCTOR CHECK]: no remedied run is labelled underfitting", " | ".join(bad))

    fig, axes = plt.subplots(1, len(CASES), figsize=(4.3 * len(CASES), 3.8), sharey=True)
    for ax, (cause, _, _) in zip(axes, CASES):
        base, fixed = res[cause, seeds[0]]
        for run_, style, label in ((base, "-", "underfit"), (fixed, "--", "remedy")):
            h = run_["history"]
            ep = np.arange(1, len(h) + 1)
            ax.plot(ep, [x["train_loss"] for x in h], style, color="tab:blue", marker="o" if len(h) == 1 else None,
                    label=f"{label}: train")
            ax.plot(ep, [x["val_loss"] for x in h], style, color="tab:orange", marker="o" if len(h) == 1 else None,
                    label=f"{label}: val")
        ax.set_title(f"{cause}\ntrain acc {base['train'][1]:.2f} → {fixed['train'][1]:.2f}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 2.5)
    axes[0].set_ylabel("cross-entropy")
    axes[0].legend(fontsize=7)
    fig.suptitle("underfitting: both curves stay high; the matching remedy brings the training loss down", fontsize=11)
    fig.tight_layout()
    ctx.figure(fig, "underfitting_remedies")


LAB = Lab(id="1.2.4", title="Causes of underfitting and remedies",
          question="欠拟合的核心原因是什么？解决欠拟合的主要思路有哪些？ — Causes of underfitting and remedies.",
          answer=ANSWER, run=run, uses="doctor, models")
