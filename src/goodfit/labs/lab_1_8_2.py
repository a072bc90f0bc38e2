"""1.8.2 Too large / too small an LR through the update rule: per-layer update-to-weight ratios, labelled runs."""
from __future__ import annotations

import math
import statistics

import numpy as np
import torch

from goodfit.labs import Lab, LabContext
from goodfit.labs.lab_1_3_2 import doctor_run

ANSWER = r"""
Plain SGD changes each weight matrix by **Δw = −η ∇L(w)**, so per step and per layer

  ‖Δw‖ / ‖w‖ = η ‖∇L‖ / ‖w‖   (the *update-to-weight ratio*).

It is the one number that says whether η fits the network: a rule of thumb is ≈ 10⁻³ per step
(each step changes a layer by a thousandth of its size).

- **Too small** (ratio ≪ 10⁻³, here 10⁻⁶–10⁻⁵): after T steps the weights have moved by at most
  T·ratio of their norm, so thousands of steps leave the model where it started. The loss falls
  **too slowly** — it looks converged ("flat") but sits at chance level — and the first-order
  picture is exact: each step is safe but useless. Remedy: raise η (LR range test, lab 1.8.5).
- **Too large** (ratio ≳ 0.1: one step moves a layer by a tenth of its norm or more): the step
  leaves the region where the gradient describes the loss. Around a minimum with curvature λ,
  w − w* ← (1 − ηλ)(w − w*) flips sign every step once η > 1/λ and grows once η > 2/λ (lab 1.8.1):
  the loss **oscillates** instead of settling (here: a tanh net's output layer keeps jumping by
  ~50% of its norm per step while its hidden units saturate, and the loss ends above its start);
  a ReLU net's huge first steps push its pre-activations negative and the units **die**
  (zero output, zero gradient, ratio 0 afterwards, loss frozen at chance: it never converges);
  and further up the loss and gradients feed each other until they overflow (**divergence**, NaN).
- **Well chosen** (ratio 10⁻³–10⁻²): fast, steady progress. The output layer usually has the
  largest ratio; very different ratios across layers are what per-layer LRs / adaptive optimizers fix.

The lab trains goodfit's digits MLP with plain SGD at a too small, a good, and three too large
learning rates, with the doctor sampling every step (`doctor.every: 1`): doctor.jsonl holds each
layer's gradient norm, weight norm and ‖Δw‖/‖w‖ of every step. It checks the update rule on those
numbers (ratio·‖w‖ = η‖∇L‖ for every layer and step), relates each LR's ratio to what the loss did,
and asserts the doctor's label for each run.
"""

CASES = (  # (name, activation, lr, the doctor's expected label)
    ("too small", "relu", 1e-4, "lr_too_low"),
    ("good", "relu", 0.1, "good_fit"),
    ("too large: oscillation", "tanh", 3.0, "lr_too_high"),
    ("too large: units die", "relu", 10.0, "lr_too_high"),
    ("far too large: divergence", "relu", 100.0, "divergence"),
)
RULE_OF_THUMB = 1e-3   # healthy per-step ‖Δw‖/‖w‖
SMALL_RATIO = 1e-4     # the too-small run: every layer's median ratio below this
GOOD_RANGE = (1e-3, 0.1)
LARGE_FIRST = 0.1      # the too-large runs: the first step moves every layer by at least this fraction
CURVE_TOP = 1e3       # the figure's loss axis stops here
EPS32 = 2.0**-24       # float32 resolution: ‖Δw‖ read as w_after − w_before is exact to ≈ EPS32·‖w‖


def layer_names(sample: dict) -> dict[str, str]:
    names = list(sample["grad_norm"])
    return {n: ("output layer" if i == len(names) - 1 else f"hidden layer {i + 1}") for i, n in enumerate(names)}


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt

    torch.set_num_threads(1)
    seeds = (0,) if ctx.quick else (0, 1)
    epochs = 3 if ctx.quick else 6
    runs = {(name, s): doctor_run(ctx, f"{name.split(':')[-1].strip().replace(' ', '_')}_seed{s}",
                                  {"optimizer.lr": lr, "model.activation": act, "seed": s, "train.epochs": epochs,
                                   "doctor.every": 1})
            for name, act, lr, _ in CASES for s in seeds}
    lr_of = {name: lr for name, _, lr, _ in CASES}
    ctx.log(f"digits MLP 64-128-128-10, plain SGD (no momentum, no weight decay), constant LR, {epochs} epochs, "
            f"seeds {list(seeds)}, every step sampled")

    # ------------------------------------------------------------ the update rule on the doctor's numbers
    worst, checked = 0.0, 0
    for (name, _), r in runs.items():
        for s in r["samples"]:
            for layer, g in s["grad_norm"].items():
                u, w = s["update_ratio"][layer], s["weight_norm"][layer]
                if not all(map(math.isfinite, (u, w, g))) or g == 0 or u == 0:
                    continue  # a NaN step, or a layer with no gradient (dead)
                err = abs(u * w / (lr_of[name] * g) - 1)
                worst = max(worst, err / (1e-5 + EPS32 / u))  # the tolerance grows as Δw sinks below w's rounding
                checked += 1
    ctx.measure("layer-steps checked against ‖Δw‖ = η‖∇L‖", checked)
    ctx.check(worst <= 1, "update rule: for every layer and sampled step, the doctor's ‖Δw‖/‖w‖ × ‖w‖ equals "
              "η × its ‖∇L‖ (plain SGD: Δw = −η∇L), to 1e-5 plus float32 rounding (2⁻²⁴/ratio)",
              f"worst error / tolerance {worst:.2f}")

    # ------------------------------------------------------------ per-layer ratios
    rows, med, first = [], {}, {}
    for name, act, lr, _ in CASES:
        names = layer_names(runs[name, 0]["samples"][0])
        for layer, label in names.items():
            finite = [[v for v in (x["update_ratio"][layer] for x in runs[name, s]["samples"]) if math.isfinite(v)]
                      for s in seeds]
            med[name, label] = max(statistics.median(f) for f in finite)
            first[name, label] = min(f[0] for f in finite)
            rows.append([name, f"{act}, η = {lr:g}", label, f"{first[name, label]:.2g}", f"{med[name, label]:.2g}"])
    ctx.table("update-to-weight ratio ‖Δw‖/‖w‖ per layer (from doctor.jsonl): first step (min over seeds) and "
              "median over the run (max over seeds)", ["case", "activation, lr", "layer", "first step", "median"], rows)
    labels = list(layer_names(runs[CASES[0][0], 0]["samples"][0]).values())
    ctx.check(all(med["too small", la] < SMALL_RATIO for la in labels),
              f"too small η: every layer's median ratio is < {SMALL_RATIO:g} (≪ the rule of thumb {RULE_OF_THUMB:g})",
              ", ".join(f"{med['too small', la]:.1g}" for la in labels))
    ctx.check(all(GOOD_RANGE[0] <= med["good", la] <= GOOD_RANGE[1] for la in labels),
              f"good η: every layer's median ratio lies in [{GOOD_RANGE[0]:g}, {GOOD_RANGE[1]:g}]",
              ", ".join(f"{med['good', la]:.2g}" for la in labels))
    large = [name for name, *_ in CASES if name.startswith(("too large", "far too"))]
    ctx.check(all(first[name, la] >= LARGE_FIRST for name in large for la in labels),
              f"too large η: the very first step moves every layer by ≥ {LARGE_FIRST:.0%} of its norm",
              ", ".join(f"{name.split(': ')[-1]}: {min(first[name, la] for la in labels):.2g}" for name in large))

    # ------------------------------------------------------------ what the loss did
    chance = math.log(10)
    summary = []
    for name, *_ in CASES:
        for s in seeds:
            r = runs[name, s]
            y = np.array(r["losses"], dtype=float)
            f = y[np.isfinite(y)]
            summary.append([name, s, f"{r['progress']:.1%}" if not r["nonfinite"] else "—",
                            f"{np.mean(np.diff(f) > 0):.0%}", f"{f[-10:].mean():.3g}" if not r["nonfinite"] else "NaN",
                            f"{max(r['samples'][-1]['dead_fraction'].values(), default=0):.0%}",
                            r["diagnosis"]["verdict"], ", ".join(sorted(r["labels"])) or "(none)"])
    ctx.table("loss behaviour and the doctor's labels per run (loss rises = share of steps whose loss rose)",
              ["case", "seed", "progress", "loss rises", "final loss", "dead units", "verdict",
               "doctor (warning/error)"], summary)

    def ends(r):
        f = [v for v in r["losses"] if math.isfinite(v)]
        return float(np.mean(f[-10:])), float(np.mean(f[:10]))

    ctx.check(all(abs(runs["too small", s]["progress"]) < 0.05 and runs["good", s]["progress"] > 0.7 for s in seeds),
              "too small η: the loss moves < 5% in the budget while the good η removes > 70% of it (every seed)",
              ", ".join(f"{runs['too small', s]['progress']:.2%} vs {runs['good', s]['progress']:.0%}" for s in seeds))
    osc = [runs["too large: oscillation", s] for s in seeds]
    ctx.check(all(ends(r)[0] > ends(r)[1] and statistics.median(x["update_ratio"][list(x["update_ratio"])[-1]]
                                                                 for x in r["samples"]) > LARGE_FIRST for r in osc),
              "oscillation (tanh, η = 3): the loss ends above where it started while the output layer keeps jumping "
              f"by > {LARGE_FIRST:.0%} of its norm per step (median; every seed)",
              ", ".join(f"{ends(r)[1]:.3g} → {ends(r)[0]:.3g}" for r in osc))
    die = [runs["too large: units die", s] for s in seeds]
    ctx.check(all(min(r["samples"][-1]["dead_fraction"].values()) >= 0.95 and abs(ends(r)[0] - chance) < 0.15
                  and all(v == 0 for v in r["samples"][-1]["update_ratio"].values()) for r in die),
              "units die (ReLU, η = 10): by the end ≥ 95% of every hidden layer's units are dead, no weight moves "
              "(ratio 0) and the loss sits at chance level ln 10 ± 0.15 (every seed)",
              ", ".join(f"final loss {ends(r)[0]:.3f}" for r in die))
    ctx.check(all(r["nonfinite"] for r in (runs["far too large: divergence", s] for s in seeds)),
              "divergence (ReLU, η = 100): the loss overflows to NaN/inf (every seed)")

    # ------------------------------------------------------------ the doctor's labels
    for name, _, lr, expected in CASES:
        got = [runs[name, s] for s in seeds]
        if expected == "good_fit":
            ok = all(r["diagnosis"]["verdict"] == "good_fit" and not r["labels"] for r in got)
            claim = f"doctor label: {name} (η = {lr:g}) → verdict good_fit, no warning (every seed)"
        elif expected == "divergence":
            ok = all(r["failed"] and r["all_labels"].get("divergence") == "error" for r in got)
            claim = f"doctor label: {name} (η = {lr:g}) → TrainingFailed and a `divergence` error (every seed)"
        else:
            ok = all(expected in r["labels"] for r in got)
            claim = f"doctor label: {name} (η = {lr:g}) → `{expected}` (warning; every seed)"
        ctx.check(ok, claim, "" if ok else "; ".join(f"seed {s}: " + ", ".join(
            f"{f['id']}[{f['severity']}] {f['evidence']}" for f in r["findings"]) for s, r in zip(seeds, got)))

    # ------------------------------------------------------------ figure
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 5))
    colors = dict(zip([c[0] for c in CASES], ["tab:blue", "tab:green", "tab:orange", "tab:red", "k"]))
    for name, act, lr, _ in CASES:
        r = runs[name, 0]
        y = np.array(r["losses"], dtype=float)
        ok = np.isfinite(y)
        ax1.plot(np.arange(1, len(y) + 1)[ok], np.minimum(y[ok], CURVE_TOP), color=colors[name], lw=1,
                 label=f"{name} ({act}, η={lr:g})")
        if not ok.all():
            ax1.plot([int(np.argmin(ok)) + 1], [CURVE_TOP], "x", color=colors[name], ms=9)
        for layer, style in zip(r["samples"][0]["update_ratio"], ("-", "--", ":")):
            steps = [x["step"] for x in r["samples"]]
            vals = np.array([x["update_ratio"][layer] for x in r["samples"]], dtype=float)
            keep = np.isfinite(vals) & (vals > 0)
            ax2.plot(np.array(steps)[keep], vals[keep], style, color=colors[name], lw=1)
    ax1.axhline(math.log(10), color="grey", lw=0.8, ls=":")
    ax1.set_yscale("log")
    ax1.set_xlabel("optimizer step")
    ax1.set_ylabel(f"training loss (seed 0, capped at {CURVE_TOP:g})")
    ax1.set_title("loss per step (dotted: chance level ln 10; × = NaN/inf)")
    ax1.legend(fontsize=8)
    ax2.axhspan(*GOOD_RANGE, color="tab:green", alpha=0.08)
    ax2.axhline(RULE_OF_THUMB, color="grey", ls=":", lw=0.8)
    ax2.set_yscale("log")
    ax2.set_xlabel("optimizer step")
    ax2.set_ylabel("‖Δw‖/‖w‖ = η‖∇L‖/‖w‖")
    ax2.set_title("update ratio per layer (solid: hidden 1, dashed: hidden 2, dotted: output;\n"
                  "gaps: zero update, dead units)", fontsize=10)
    ctx.figure(fig, "update_ratio")


LAB = Lab(id="1.8.2", title="Too large / too small a learning rate, via the update rule",
          question="学习率过大或过小分别会导致哪些具体的训练问题（如不收敛、收敛过慢、震荡等）？请结合梯度更新公式说明原因。 — "
                   "Too large/small LR problems, via the update rule.",
          answer=ANSWER, run=run, uses="monitors, doctor")
