"""1.1.4 Why monitor validation: three runs whose val loss stalls for different reasons, told apart by the doctor."""
from __future__ import annotations

import math
import shutil

import numpy as np

from goodfit.labs import Lab, LabContext
from goodfit.labs.lab_1_2_1 import OVERFIT, scores, train

ANSWER = r"""
The training loss measures how well the model fits the data it is optimized on; what we want is
the error on *new* data, and only held-out data estimates it. So we watch a **validation** metric
during training, to

- **detect overfitting**: the training loss keeps falling while the validation loss turns up; the
  training curve alone would report steady progress;
- **select the model**: the epoch (early stopping, 1.1.5), checkpoint and hyperparameters with the
  best validation score, never the test score (1.1.2);
- **see that training stopped helping**: a validation curve that flattens says more epochs are
  wasted, and *why* it flattened decides what to change.

When the validation loss stops falling, compare it with the training curve and the size of the
updates; the usual causes are

| cause | training loss | validation loss | other evidence | fix |
|---|---|---|---|---|
| **overfitting** | keeps falling towards 0 | bottoms out, then rises | gap val − train grows | regularize, more data, early stopping |
| **LR too high** | stays high, noisy or stuck | stalls high, jumps | large relative updates ‖Δw‖/‖w‖, dead ReLUs, loss spikes | lower the LR, warm up |
| **LR too low** | barely moves | barely moves, near chance | tiny updates ‖Δw‖/‖w‖ ≪ 10⁻³ | raise the LR |
| **underfitting** (too small a model, too much regularization) | flattens high | flattens just as high | normal updates | more capacity, less regularization |
| learning rate decayed to ~0 / converged | flat and low | flat and low | — | done (or a new schedule) |
| train/val mismatch, leakage, label noise | low | high from the start | split checks | fix the data |

goodfit's doctor does this comparison for every run: it samples gradients, update ratios and
activations during training (`doctor.every` steps) and judges the curves at the end; each
finding names the cause, its evidence against thresholds, and a recipe patch.

The lab trains the digits MLP three ways whose validation loss stalls (the deliberately overfit run
of lab 1.2.1; Adam at LR 0.1 with no decay, 33× the recipe's; Adam at LR 10⁻⁵, 300× below it) plus
`digits-mlp` as shipped for reference, and checks the curves and the doctor's diagnosis of each.
"""

SEEDS_QUICK, SEEDS_FULL = (0,), (0, 1, 2)
HIGH_LR = {"optimizer.lr": 0.1, "schedule.name": "constant", "train.epochs": 20}
LOW_LR = {"optimizer.lr": 1e-5, "train.epochs": 20}
CASES = (("overfitting", OVERFIT), ("LR too high", HIGH_LR), ("LR too low", LOW_LR), ("reference", {}))
RISE = 1.3       # overfit: last val loss ≥ this × its minimum while ...
FALL = 0.5       # ... the train loss ends below this × its value at the val minimum
STALL = 2.0      # a stalled run's best val loss is at least this × the reference run's
SLOW = 0.05      # LR too low: the train loss fell by less than this fraction of its first epoch's value
NAMED = {"overfitting": "overfitting", "LR too high": "lr_too_high", "LR too low": "lr_too_low"}


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt

    seeds = SEEDS_QUICK if ctx.quick else SEEDS_FULL
    root = ctx.out / "runs"
    shutil.rmtree(root, ignore_errors=True)  # this lab's own scratch folder
    runs = {(name, s): train("digits-mlp", ov, s, root) for name, ov in CASES for s in seeds}

    def curve(r, key):
        return np.array([h[key] for h in r.history])

    rows = []
    for (name, s), r in runs.items():
        vl, tl = curve(r, "val_loss"), curve(r, "train_loss")
        warn = r.diagnosis.warnings()
        ev = {k: v for f in warn for k, v in f.evidence.items()
              if k in ("val_rise", "generalization_gap", "median_update_ratio", "first_update_ratio", "loss_progress",
                       "dead_fraction")}
        rows.append([name, s, len(vl), int(vl.argmin()) + 1, vl.min(), vl[-1], tl[-1], r.diagnosis.verdict,
                     ", ".join(f.id for f in warn) or "—", ", ".join(f"{k} {v:.3g}" for k, v in ev.items())])
    ctx.table("the runs: val/train loss per epoch (cross-entropy) and what the doctor named",
              ["run", "seed", "epochs", "val-min epoch", "val min", "val last", "train last", "verdict", "warnings",
               "evidence"], rows)

    ref = {s: curve(runs["reference", s], "val_loss").min() for s in seeds}
    ctx.measure("reference (digits-mlp as shipped): best val loss, mean over seeds", float(np.mean(list(ref.values()))))
    stalled = {(n, s): curve(runs[n, s], "val_loss").min() / ref[s] for n in NAMED for s in seeds}
    ctx.check(all(v >= STALL for v in stalled.values()),
              f"all three val curves stall: each run's best val loss is ≥ {STALL}× the reference run's, every seed",
              ", ".join(f"{n} s{s} ×{v:.1f}" for (n, s), v in stalled.items()))

    # why monitor: the training curve of the overfit run looks like steady progress
    facts = []
    for s in seeds:
        r = runs["overfitting", s]
        vl, tl, va = curve(r, "val_loss"), curve(r, "train_loss"), curve(r, "val_accuracy")
        low = int(vl.argmin())
        facts.append((vl[-1] / vl[low], tl[-1] / tl[low], va[low] - va[-1], low + 1))
    ctx.check(all(rise >= RISE and fall <= FALL for rise, fall, _, _ in facts),
              f"overfitting: after the val minimum the train loss falls below {FALL}× while the val loss ends "
              f"≥ {RISE}× its minimum — only the val curve shows it, every seed",
              ", ".join(f"min @{e}: val ×{rise:.2f}, train ×{fall:.2f}" for rise, fall, _, e in facts))
    lost = float(np.mean([f[2] for f in facts]))
    ctx.measure("overfitting: val accuracy lost by delivering the last epoch instead of the val-min epoch", lost)
    ctx.check(lost > 0, "selecting the epoch by validation pays: the val-min epoch has higher val accuracy than the "
                        "last one (mean over seeds)", f"{lost:+.3f}")
    high = [(curve(runs["LR too high", s], "train_loss")[-1], curve(runs["reference", s], "train_loss")[-1])
            for s in seeds]
    ctx.check(all(h >= 10 * max(g, 0.01) for h, g in high),
              "LR too high: the train loss also stalls, ≥ 10× the reference run's final train loss, every seed",
              ", ".join(f"{h:.3f} vs {g:.3f}" for h, g in high))
    low = [1 - curve(runs["LR too low", s], "train_loss")[-1] / curve(runs["LR too low", s], "train_loss")[0]
           for s in seeds]
    ctx.check(all(x < SLOW for x in low), f"LR too low: the train loss fell by < {SLOW:.0%} of its first epoch's over "
                                          "the whole run (both curves flat near ln 10), every seed",
              ", ".join(f"{x:.1%}" for x in low))

    # the doctor: each run's cause named as a warning, and no other run's cause
    for name, fid in NAMED.items():
        others = set(NAMED.values()) - {fid}
        bad = []
        for s in seeds:
            d = runs[name, s].diagnosis
            ids = {f.id for f in d.warnings()}
            if fid not in ids or ids & others:
                bad.append(f"seed {s}: verdict {d.verdict}, " + "; ".join(f"{f.id} {f.evidence}" for f in d.warnings()))
        ctx.check(not bad, f"doctor label [DOCTOR CHECK]: the '{name}' run gets a `{fid}` warning and none of "
                           f"{sorted(others)}, every seed", " | ".join(bad))
    checks = {"overfitting": "overfitting", "LR too low": "underfitting", "reference": "good_fit"}
    for name, verdict in checks.items():
        bad = [f"seed {s}: {runs[name, s].diagnosis.verdict}" for s in seeds
               if runs[name, s].diagnosis.verdict != verdict]
        ctx.check(not bad, f"doctor label [DOCTOR CHECK]: the '{name}' run's verdict is {verdict}, every seed",
                  ", ".join(bad))
    # the model the LR-too-high run delivers fits its own training data much worse than the reference: not a good fit
    fit = {s: (scores(runs["LR too high", s], "train")[1], scores(runs["reference", s], "train")[1]) for s in seeds}
    bad = [f"seed {s}: verdict good_fit with train accuracy {fit[s][0]:.3f} (reference {fit[s][1]:.3f}); "
           + "; ".join(f"{f.id} {f.evidence}" for f in runs["LR too high", s].diagnosis.findings
                       if f.id in ("underfitting", "lr_too_high", "dead_units"))
           for s in seeds if runs["LR too high", s].diagnosis.verdict == "good_fit" and fit[s][0] < fit[s][1] - 0.1]
    ctx.check(not bad, "doctor label [DOCTOR CHECK]: the 'LR too high' run is not called good_fit when its delivered "
                       "model's train accuracy is > 10 points below the reference run's, every seed", " | ".join(bad))
    for name in NAMED:
        d = runs[name, seeds[0]].diagnosis
        ctx.log(f"{name}, seed {seeds[0]}: patch {d.recipe_patch()}; "
                + "; ".join(f"{f.id}: {f.message}" for f in d.warnings()))

    fig, axes = plt.subplots(1, len(CASES), figsize=(4.4 * len(CASES), 3.8), sharey=True)
    for ax, (name, _) in zip(axes, CASES):
        r = runs[name, seeds[0]]
        ep = np.arange(1, len(r.history) + 1)
        ax.plot(ep, curve(r, "train_loss"), color="tab:blue", label="train loss")
        ax.plot(ep, curve(r, "val_loss"), color="tab:orange", label="val loss")
        ax.axhline(math.log(10), color="0.5", ls=":", lw=1, label="chance (ln 10)")
        warn = ", ".join(f.id for f in r.diagnosis.warnings()) or "no warning"
        ax.set_title(f"{name}\ndoctor: {r.diagnosis.verdict}; warnings: {warn}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 2.6)
    axes[0].set_ylabel("cross-entropy")
    axes[0].legend(fontsize=8)
    fig.suptitle("val loss stalls for different reasons; the train curve and the doctor tell them apart", fontsize=11)
    fig.tight_layout()
    ctx.figure(fig, "stalled_val_loss")


LAB = Lab(id="1.1.4", title="Monitoring validation; why val loss stalls",
          question="训练过程中为什么要监控验证集指标？如果验证集损失不再下降，可能的原因有哪些？ — Why monitor validation "
                   "metrics; causes when val loss stops falling.",
          answer=ANSWER, run=run, uses="doctor")
