"""1.2.5 Judging the fit of a run and what to do next: the doctor's procedure, its prescriptions applied as a patch."""
from __future__ import annotations

import shutil

import numpy as np

from goodfit.labs import Lab, LabContext
from goodfit.labs.lab_1_2_1 import OVERFIT, UNDERFIT, train

ANSWER = r"""
**Judge with three numbers per run**, all from the train/val curves of the delivered model: the
training loss against the chance level (ln K), the validation loss against its own minimum, and
the gap val − train (score both with the final weights in eval mode; 1.2.1). goodfit's doctor runs
this procedure after every run (`diagnosis.json`, `goodfit doctor RUN`):

1. **Did it train?** A non-finite loss is `failed` (`divergence`): lower the LR, clip gradients.
2. **Does it fit the training data?** Training and validation loss both far above 0 (a sizeable
   fraction of ln K) → `underfitting`. First look for an optimization cause among the in-flight
   findings — `lr_too_low` (tiny ‖Δw‖/‖w‖), `lr_too_high` (unstable loss, huge first steps),
   `dead_units`, `vanishing_gradients`, `plateau` — and fix it; otherwise raise capacity, train
   longer, regularize less (1.2.4).
3. **Does it generalize?** Validation loss clearly above its minimum while the training loss kept
   falling, or a gap that is a large fraction of ln K → `overfitting`: regularize (weight decay,
   dropout), augment, get more data, stop early (1.2.3). If early stopping already delivered the
   best epoch, the overfit is history (an `info` finding with its onset epoch) and not the verdict.
4. **Otherwise `good_fit`**: ship it, or buy more with more capacity *and* regularization, more
   data, a better architecture; each change is judged again by the same procedure.
5. Data findings (`label_noise`, `class_imbalance`, `split_leakage`, `unnormalized_inputs`) come
   from pre-flight checks and stand beside the verdict.

**What to do next** is the prescription: every warning carries actions with a `recipe_patch`;
`Diagnosis.recipe_patch()` merges the first action of each warning (`goodfit doctor RUN --fix`
writes the patched recipe). Apply it, train again, diagnose again; change one thing at a time, and
compare on validation, never on test. A prescription is a first move, not a guarantee: it is
judged by the val score of the rerun, which this lab measures.

**The lab** diagnoses digits-MLP runs — deliberately overfit (lab 1.2.1's noisy 300 samples; and a
clean 200-sample version of it), underfit (4 hidden units), goodfit's recipe as shipped, and in full
mode LR 0.1 without decay and LR 10⁻⁵ — applies each diagnosis's `recipe_patch()` to the same recipe
and seed, and compares the validation accuracy of the delivered models.
"""

SEEDS_QUICK, SEEDS_FULL = (0,), (0, 1, 2)
CLEAN_OVERFIT = {**OVERFIT, "data.perturb.subset": 200, "data.perturb.label_noise": 0.0}
CASES_QUICK = (  # (name, overrides, expected verdict; None: not asserted)
    ("overfit (20% noisy labels)", {**OVERFIT, "train.epochs": 30}, "overfitting"),
    ("overfit (clean, 200 samples)", CLEAN_OVERFIT, "overfitting"),
    ("underfit (4 units)", UNDERFIT, "underfitting"),
    ("digits-mlp as shipped", {}, "good_fit"),
)
CASES_FULL = (
    ("overfit (20% noisy labels)", OVERFIT, "overfitting"),
    *CASES_QUICK[1:],
    ("LR too high (0.1, constant)", {"optimizer.lr": 0.1, "schedule.name": "constant", "train.epochs": 20}, None),
    ("LR too low (1e-5)", {"optimizer.lr": 1e-5, "train.epochs": 20}, "underfitting"),
)


def delivered_val_accuracy(run) -> float:
    """Val accuracy of the model the run delivers: the best epoch's with restore_best, else the last one's."""
    h = run.history
    epoch = run.best_epoch if run.recipe.train.early_stopping.restore_best and run.best_epoch else len(h)
    return h[epoch - 1]["val_accuracy"]


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt

    seeds = SEEDS_QUICK if ctx.quick else SEEDS_FULL
    cases = CASES_QUICK if ctx.quick else CASES_FULL
    root = ctx.out / "runs"
    shutil.rmtree(root, ignore_errors=True)  # this lab's own scratch folder

    res = {}
    for name, ov, _ in cases:
        for s in seeds:
            before = train("digits-mlp", ov, s, root)
            patch = before.diagnosis.recipe_patch()
            after = train("digits-mlp", {**ov, **patch}, s, root) if patch else None
            res[name, s] = {"diagnosis": before.diagnosis, "patch": patch, "before": delivered_val_accuracy(before),
                            "after": delivered_val_accuracy(after) if after else None,
                            "verdict_after": after.diagnosis.verdict if after else None}
    rows = []
    for (name, s), r in res.items():
        d = r["diagnosis"]
        rows.append([name, s, d.verdict, ", ".join(f.id for f in d.warnings()) or "—", r["patch"] or "—", r["before"],
                     "—" if r["after"] is None else r["after"], r["verdict_after"] or "—"])
    ctx.table("diagnose → apply Diagnosis.recipe_patch() → train again (same recipe and seed); val accuracy of the "
              "delivered model", ["run", "seed", "verdict", "warnings", "recipe_patch()", "val acc", "patched val acc",
                                  "patched verdict"], rows)
    for name, _, _ in cases:
        d = res[name, seeds[0]]["diagnosis"]
        for f in d.warnings():
            ctx.log(f"{name}, seed {seeds[0]}: {f.id} — {f.message} evidence {f.evidence} thresholds {f.thresholds}")

    for name, _, verdict in cases:
        if verdict is None:
            continue
        healthy = verdict == "good_fit"
        bad = [f"seed {s}: {res[name, s]['diagnosis'].verdict} "
               + "; ".join(f"{f.id} {f.evidence}" for f in res[name, s]["diagnosis"].warnings())
               for s in seeds if res[name, s]["diagnosis"].verdict != verdict
               or (healthy and res[name, s]["diagnosis"].warnings())]
        ctx.check(not bad, f"doctor label [DOCTOR CHECK]: {name} → verdict {verdict}"
                           + (" with no warning" if healthy else "") + ", every seed", " | ".join(bad))
    if not ctx.quick:
        name = "LR too high (0.1, constant)"
        bad = [f"seed {s}: {res[name, s]['diagnosis'].verdict}, warnings "
               f"{[f.id for f in res[name, s]['diagnosis'].warnings()]}"
               for s in seeds if "lr_too_high" not in {f.id for f in res[name, s]["diagnosis"].warnings()}]
        ctx.check(not bad, f"doctor label [DOCTOR CHECK]: {name} carries an `lr_too_high` warning, every seed",
                  " | ".join(bad))
    good = "digits-mlp as shipped"
    ctx.check(all(not res[good, s]["patch"] for s in seeds), "a good fit gets no prescription: recipe_patch() is empty")

    for name, _, verdict in cases:
        if verdict == "good_fit":
            continue
        gains = [res[name, s]["after"] - res[name, s]["before"] if res[name, s]["after"] is not None else float("nan")
                 for s in seeds]
        ctx.measure(f"{name}: val accuracy gain of the patched rerun (mean)", float(np.mean(gains)))
        # a prescription must help on average and hurt no seed (a seed already at its ceiling may stay level)
        ctx.check(float(np.mean(gains)) > 0 and all(g >= 0 for g in gains),
                  f"doctor prescription [DOCTOR CHECK]: for '{name}' applying recipe_patch() "
                  f"({res[name, seeds[0]]['patch']}) raises the mean val accuracy and lowers it on no seed",
                  ", ".join(f"s{s}: {res[name, s]['before']:.3f} → {res[name, s]['after']:.3f}" if g == g
                            else f"s{s}: no patch" for s, g in zip(seeds, gains)))

    fig, ax = plt.subplots(figsize=(1.9 * len(cases) + 2, 4.6))
    x = np.arange(len(cases))
    before = [np.mean([res[n, s]["before"] for s in seeds]) for n, _, _ in cases]
    patched = [i for i, (n, _, _) in enumerate(cases) if all(res[n, s]["after"] is not None for s in seeds)]
    after = [np.mean([res[cases[i][0], s]["after"] for s in seeds]) for i in patched]
    ax.bar(x - 0.2, before, 0.4, label="as diagnosed", color="0.6")
    ax.bar(x[patched] + 0.2, after, 0.4, label="after recipe_patch()", color="tab:green")
    for i, (n, _, _) in enumerate(cases):
        d = res[n, seeds[0]]
        patch = "\n".join(f"{k}={v}" for k, v in d["patch"].items()) or "no patch"
        ax.text(i, 0.03, f"{d['diagnosis'].verdict}\n{patch}", ha="center", va="bottom", fontsize=6.5,
                bbox={"facecolor": "white", "alpha": 0.8, "lw": 0})
    ax.set_xticks(x, [n for n, _, _ in cases], fontsize=7.5, rotation=12)
    ax.set_ylabel("val accuracy (delivered model)")
    ax.set_ylim(0, 1.15)
    ax.set_title(f"the doctor's verdict and prescription, applied (mean over {len(seeds)} seed(s))")
    ax.legend(fontsize=8, loc="upper center", ncol=2)
    fig.tight_layout()
    ctx.figure(fig, "prescriptions_applied")


LAB = Lab(id="1.2.5", title="Judging the fit and what to do next",
          question="在实际项目中，如何判断模型当前是过拟合、欠拟合还是拟合良好？后续该如何调整策略？ — Judging fit in a real "
                   "project and what to do next.",
          answer=ANSWER, run=run, uses="doctor prescriptions")
