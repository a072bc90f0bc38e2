"""1.3.2 The learning rate: a sweep over 7 decades on digits, each run labelled by goodfit's doctor."""
from __future__ import annotations

import json
import math
import shutil
import statistics

import numpy as np
import torch

from goodfit.labs import Lab, LabContext

ANSWER = r"""
The learning rate η is the length of the step gradient descent takes along the negative gradient,
Δw = −η ∇L(w). The gradient only gives a direction that is right *locally*; η decides how far to trust
it. Near a minimum the loss is a quadratic with curvature (Hessian eigenvalues) λ_i, and one step
multiplies the error along eigenvector i by (1 − ηλ_i) (lab 1.8.1): gradient descent converges only
if η < 2/λmax, and the slowest direction contracts by (1 − ηλmin) per step.

**Too large.** Above 2/λmax the steep directions overshoot: the loss rises instead of falling.
Mildly too large, it oscillates and settles at a poor level; a few times larger, the weights are
thrown into a region where the loss and the gradients are larger still and the loss overflows to
NaN (divergence). ReLU networks have a third failure in between: one huge step pushes most
pre-activations negative, the units die (zero output, zero gradient), and the loss freezes at
chance level, finite but hopeless.

**Too small.** Every step changes the weights by ‖Δw‖/‖w‖ = η‖∇L‖/‖w‖ ≪ 10⁻³: the loss falls so
slowly that the budget runs out near the starting loss (and noise-driven escapes from poor regions
never happen). Training is stable but useless: the run looks like a plateau at chance level.

**In between** is a range about a decade or two wide where the loss falls fast and steadily; its
top end (just below instability) is usually the most efficient. Find it with an LR range test
(`goodfit lr-find`, lab 1.8.5), then decay it (labs 1.3.4, 1.8.6).

The lab trains goodfit's digits MLP (2 × 128 ReLU) with plain SGD (no momentum, no weight decay,
constant LR) at learning rates from 10⁻⁵ to 10², several seeds each, and lets goodfit's doctor
(`doctor.every: 5`) label every run from its own measurements: `divergence` for a non-finite
loss, `lr_too_high` for a loss that oscillates or blew up, `lr_too_low` for a loss that barely
moved while the weights barely moved, `good_fit` for a healthy run.
"""

BASE = {"optimizer.name": "sgd", "optimizer.momentum": 0.0, "optimizer.weight_decay": 0.0,
        "schedule.name": "constant", "model.dropout": 0.0, "train.early_stopping.patience": None,
        "doctor.every": 5, "train.threads": 1}
LRS_FULL = (1e-5, 1e-4, 1e-3, 1e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0)
LRS_QUICK = (1e-5, 1e-3, 0.1, 10.0, 100.0)
BLOW_UP = 100.0         # a finite run whose per-step loss peaked above this × its first loss blew up
CURVE_TOP = 1e3         # the figure's loss axis stops here
SLOW = 0.05             # a run whose loss fell by less than this fraction of its start made no progress
FAR_BELOW = 100.0       # "too low" is judged only at LRs at least this far below the best one
GOOD_ACC = 0.85         # the best LR's mean val accuracy (quick mode's 4 epochs reach ≈ 0.9, full mode's 8 ≈ 0.95)
TINY_UPDATE = 1e-5      # per-step ‖Δw‖/‖w‖ at the bottom of the sweep: 10⁵ steps to move the weights by their norm


def doctor_run(ctx: LabContext, tag: str, overrides: dict, recipe: str = "digits-mlp") -> dict:
    """Train a recipe (SGD, constant LR unless overridden); the run's curves and the doctor's files
    (diagnosis.json, doctor.jsonl), diverged or not."""
    import goodfit
    from goodfit.errors import TrainingFailed

    out = ctx.out / "runs" / tag
    shutil.rmtree(out, ignore_errors=True)  # this lab's own scratch folder
    try:
        run = goodfit.run(recipe, {**BASE, **overrides}, out=out, progress=False)
        run_dir, history, failed = run.dir, run.history, False
    except TrainingFailed:
        run, run_dir, history, failed = None, next(out.glob("*/*")), [], True
    diagnosis = json.loads((run_dir / "diagnosis.json").read_text())
    losses, samples = [], []
    for line in (run_dir / "doctor.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["kind"] == "loss":
            losses.append(float(row["loss"]))  # "nan" / "inf" come back as floats
        elif row["kind"] == "sample":
            samples.append(row)
    finite = [v for v in losses if math.isfinite(v)]
    k = max(1, len(finite) // 10)
    start, end = float(np.mean(finite[:k])), float(np.mean(finite[-k:]))
    later = samples[len(samples) // 2:] or samples
    ratios = [statistics.median(s["update_ratio"].values()) for s in later if s["update_ratio"]]
    first = statistics.median(samples[0]["update_ratio"].values()) if samples and samples[0]["update_ratio"] else math.nan
    return {"failed": failed, "history": history, "diagnosis": diagnosis, "losses": losses,
            "labels": {f["id"] for f in diagnosis["findings"] if f["severity"] in ("warning", "error")},
            "all_labels": {f["id"]: f["severity"] for f in diagnosis["findings"]},
            "nonfinite": failed or any(not math.isfinite(v) for v in losses),
            "peak": max(finite) / finite[0], "progress": (start - end) / start,
            "update_ratio": statistics.median(ratios) if ratios else math.nan, "first_ratio": first,
            "val_loss": min((h["val_loss"] for h in history), default=math.inf),
            "val_acc": history[-1]["val_accuracy"] if history else math.nan,
            "findings": diagnosis["findings"], "samples": samples, "dir": run_dir, "run": run}


LABEL_ORDER = ("divergence", "lr_too_high", "lr_too_low", "plateau", "exploding_gradients", "vanishing_gradients",
               "dead_units", "saturated_activations", "underfitting", "overfitting")
LABEL_COLORS = {"divergence": "k", "lr_too_high": "tab:red", "lr_too_low": "tab:blue", "plateau": "tab:cyan",
                "exploding_gradients": "tab:orange", "vanishing_gradients": "tab:purple", "dead_units": "tab:brown",
                "saturated_activations": "tab:pink", "underfitting": "tab:olive", "overfitting": "tab:gray",
                "good_fit": "tab:green"}


def primary(r: dict) -> str:
    """The run's most specific warning/error label (the cause before the symptoms), or good_fit."""
    return next((x for x in LABEL_ORDER if x in r["labels"]), "good_fit")


def outcome(r: dict) -> str:
    """What the run did, from its measurements alone (not from the doctor)."""
    if r["nonfinite"]:
        return "diverged (NaN/inf)"
    if r["peak"] > BLOW_UP:
        return f"blew up (peak {r['peak']:.2g}× start)"
    if r["progress"] < SLOW:
        return f"no progress ({r['progress']:.1%})"
    return f"trained ({r['progress']:.0%} of the loss removed)"


def evidence(r: dict, ids: tuple[str, ...]) -> str:
    """The doctor's evidence for the findings it gave instead (what the lead needs to judge a mislabel)."""
    parts = []
    for f in r["findings"]:
        if f["id"] in ids or f["severity"] != "info":
            ev = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in f["evidence"].items()
                           if not isinstance(v, list))
            parts.append(f"{f['id']}[{f['severity']}]({ev})")
    return "; ".join(parts)


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt

    from goodfit.doctor.rules import THRESHOLDS

    torch.set_num_threads(1)
    lrs = LRS_QUICK if ctx.quick else LRS_FULL
    seeds = (0,) if ctx.quick else (0, 1, 2)
    epochs = 4 if ctx.quick else 8
    runs = {(lr, s): doctor_run(ctx, f"lr{lr:g}_seed{s}", {"optimizer.lr": lr, "seed": s, "train.epochs": epochs})
            for lr in lrs for s in seeds}
    ctx.log(f"digits MLP 64-128-128-10 (ReLU), plain SGD, constant LR, {epochs} epochs "
            f"({len(runs[lrs[0], 0]['losses'])} steps), seeds {list(seeds)}")

    # ------------------------------------------------------------ the sweep
    finite_lrs = [lr for lr in lrs if not any(runs[lr, s]["nonfinite"] for s in seeds)]
    mean_val = {lr: float(np.mean([runs[lr, s]["val_loss"] for s in seeds])) for lr in finite_lrs}
    best = min(mean_val, key=mean_val.get)
    rows = []
    for lr in lrs:
        rs = [runs[lr, s] for s in seeds]
        labels = sorted({x for r in rs for x in r["labels"]} or {"(none)"})
        rows.append([f"{lr:g}", f"{np.median([r['update_ratio'] for r in rs]):.2g}",
                     f"{np.mean([r['progress'] for r in rs]):.1%}" if not any(r["nonfinite"] for r in rs) else "—",
                     f"{np.mean([r['val_acc'] for r in rs]):.3f}" if not any(r["failed"] for r in rs) else "—",
                     " / ".join(sorted({outcome(r).split(" (")[0] for r in rs})),
                     ", ".join(sorted({r["diagnosis"]["verdict"] for r in rs})), ", ".join(labels)])
    ctx.table(f"LR sweep ({len(seeds)} seed(s) per LR): median per-step update ratio ‖Δw‖/‖w‖ (second half of the "
              "run), loss progress (share of the starting loss removed), final val accuracy, what the run did, "
              "and the doctor's verdict and warning/error findings",
              ["lr", "update ratio", "progress", "val acc", "run", "verdict", "doctor (warning/error)"], rows)
    ctx.measure("best LR (lowest mean best-epoch val loss)", best)
    ctx.measure("val accuracy at the best LR (mean)", float(np.mean([runs[best, s]["val_acc"] for s in seeds])))

    # ------------------------------------------------------------ the phenomena (measured, not the doctor)
    ctx.check(lrs[0] < best < lrs[-1] and np.mean([runs[best, s]["val_acc"] for s in seeds]) >= GOOD_ACC,
              f"the best LR lies inside the sweep and reaches val accuracy ≥ {GOOD_ACC} (mean over seeds)",
              f"best {best:g}")
    ctx.check(all(runs[lrs[-1], s]["nonfinite"] for s in seeds),
              f"top: at lr {lrs[-1]:g} the loss overflows to NaN/inf on every seed (divergence)")
    ctx.check(all(runs[lrs[0], s]["progress"] < SLOW for s in seeds)
              and all(runs[best, s]["progress"] > 0.8 for s in seeds),
              f"bottom: at lr {lrs[0]:g} the loss falls by < {SLOW:.0%} of its start in the budget (every seed), "
              "while the best LR removes > 80% of it",
              f"{max(runs[lrs[0], s]['progress'] for s in seeds):.2%} vs "
              f"{min(runs[best, s]['progress'] for s in seeds):.0%}")
    low = [lr for lr in lrs if lr <= best]
    ratios = [np.median([runs[lr, s]["update_ratio"] for s in seeds]) for lr in low]
    ctx.check(all(b > a for a, b in zip(ratios, ratios[1:])) and ratios[0] < TINY_UPDATE,
              "up to the best LR the per-step update ratio ‖Δw‖/‖w‖ = η‖∇L‖/‖w‖ rises with η, and at the "
              f"bottom it is < {TINY_UPDATE:g}",
              ", ".join(f"{lr:g}: {r:.2g}" for lr, r in zip(low, ratios)))

    # ------------------------------------------------------------ the doctor's labels
    diverged = [(lr, s) for (lr, s), r in runs.items() if r["nonfinite"]]
    bad = [f"lr {lr:g} seed {s}: {runs[lr, s]['diagnosis']['verdict']}, {evidence(runs[lr, s], ())}"
           for lr, s in diverged if not (runs[lr, s]["failed"] and runs[lr, s]["diagnosis"]["verdict"] == "failed"
                                         and runs[lr, s]["all_labels"].get("divergence") == "error")]
    ctx.check(diverged and not bad, "doctor label: every run whose loss went non-finite stops (TrainingFailed) with "
              "verdict 'failed' and a `divergence` error in diagnosis.json", "; ".join(bad) or f"{len(diverged)} runs")
    blown = [(lr, s) for (lr, s), r in runs.items() if not r["nonfinite"] and r["peak"] > BLOW_UP]
    bad = [f"lr {lr:g} seed {s} (peak {runs[lr, s]['peak']:.2g}× start): {evidence(runs[lr, s], ('lr_too_high',))}"
           for lr, s in blown if "lr_too_high" not in runs[lr, s]["labels"]]
    ctx.check(not bad, f"doctor label [DOCTOR CHECK]: every finite run whose loss blew up (peak > {BLOW_UP:g}× its "
              "first loss) is labelled `lr_too_high` (warning)",
              "; ".join(bad) or f"{len(blown)} runs: " + ", ".join(f"{lr:g}/s{s}" for lr, s in blown))
    slow = [(lr, s) for (lr, s), r in runs.items()
            if lr * FAR_BELOW <= best and not r["nonfinite"] and r["progress"] < SLOW]
    bad = [f"lr {lr:g} seed {s} (progress {runs[lr, s]['progress']:.2%}): {evidence(runs[lr, s], ('lr_too_low',))}"
           for lr, s in slow if "lr_too_low" not in runs[lr, s]["labels"]]
    ctx.check(slow and not bad, f"doctor label [DOCTOR CHECK]: every run at an LR ≥ {FAR_BELOW:g}× below the best "
              f"whose loss fell by < {SLOW:.0%} is labelled `lr_too_low` (warning)",
              "; ".join(bad) or f"{len(slow)} runs: " + ", ".join(f"{lr:g}/s{s}" for lr, s in slow))
    bad = [f"seed {s}: {runs[best, s]['diagnosis']['verdict']}, {evidence(runs[best, s], ())}" for s in seeds
           if runs[best, s]["diagnosis"]["verdict"] != "good_fit" or runs[best, s]["labels"]]
    ctx.check(not bad, f"doctor label: at the best LR ({best:g}) every seed's verdict is good_fit with no warning",
              "; ".join(bad))

    # ------------------------------------------------------------ figure
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 4.8))
    cmap = plt.get_cmap("viridis")
    for i, lr in enumerate(lrs):
        r = runs[lr, 0]
        y = np.array(r["losses"], dtype=float)
        x = np.arange(1, len(y) + 1)
        ok = np.isfinite(y)
        color = cmap(i / max(1, len(lrs) - 1))
        ax1.plot(x[ok], np.minimum(y[ok], CURVE_TOP), color=color, lw=1, label=f"{lr:g}")
        if not ok.all():
            ax1.plot([int(np.argmin(ok)) + 1], [CURVE_TOP], "x", color=color, ms=9)
    ax1.set_yscale("log")
    ax1.set_xlabel("optimizer step")
    ax1.set_ylabel(f"training loss per step (seed 0, capped at {CURVE_TOP:g})")
    ax1.set_title("loss curves (× = became NaN/inf)")
    ax1.legend(title="lr", fontsize=7, ncol=2)
    shown = set()
    for lr in lrs:
        for s in seeds:
            r = runs[lr, s]
            label = primary(r)
            ax2.scatter(lr * (1 + 0.08 * (s - 1)), 0.0 if r["failed"] else r["val_acc"], color=LABEL_COLORS[label],
                        s=30, label=label if label not in shown else None, zorder=3)
            shown.add(label)
    ax2.set_xscale("log")
    ax2.set_xlabel("learning rate")
    ax2.set_ylabel("final val accuracy (0 = diverged)")
    ax2.set_title("per seed, coloured by the doctor's main label", fontsize=10)
    ax2.legend(fontsize=7)
    for key, style, name in (("update_ratio", "o-", "median, second half of the run"),
                             ("first_ratio", "s--", "first step")):
        vals = [np.median([runs[lr, s][key] for s in seeds]) for lr in lrs]
        keep = [(lr, v) for lr, v in zip(lrs, vals) if v > 0 and math.isfinite(v)]
        ax3.loglog(*zip(*keep), style, label=name)
    ax3.axhline(THRESHOLDS["update_ratio_low"], color="grey", ls=":", label="doctor: too low below")
    ax3.axhline(THRESHOLDS["update_ratio_high"], color="grey", ls="-.", label="doctor: too high above")
    ax3.set_xlabel("learning rate")
    ax3.set_ylabel("‖Δw‖/‖w‖ per step (median over layers)")
    ax3.set_title("update ratio η‖∇L‖/‖w‖ (zeros of dead nets not shown)", fontsize=10)
    ax3.legend(fontsize=8)
    ctx.figure(fig, "lr_sweep")


LAB = Lab(id="1.3.2", title="The role of the learning rate",
          question="学习率（Learning Rate）的核心作用是什么？学习率过大或过小会导致哪些训练问题？ — Role of the LR; "
                   "problems when too large or too small.",
          answer=ANSWER, run=run, uses="doctor")
