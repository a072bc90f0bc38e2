"""1.4.2 L1 vs L2: the formulas, the weight histograms, and L1's sparsity at a matched validation score."""
from __future__ import annotations

import numpy as np

from goodfit.labs import Lab, LabContext

ANSWER = r"""
| | L1 (lasso) | L2 (ridge, "weight decay") |
|---|---|---|
| penalty | λ·Σ\|w_i\| | (λ/2)·Σw_i² |
| gradient | λ·sign(w) (a subgradient at 0) | λ·w |
| per-step effect (SGD, step η) | w ← w − ηλ·sign(w): a **constant** pull, the same for small and large weights | w ← (1 − ηλ)·w: a **proportional** shrink |
| proximal step | soft thresholding: w ← sign(w)·max(\|w\| − ηλ, 0), exact zeros | w ← w/(1 + ηλ), never exactly 0 |
| prior (MAP view) | Laplace, p(w) ∝ e^{−λ\|w\|}: a sharp peak at 0 | Gaussian, p(w) ∝ e^{−λw²/2} |
| geometry | constraint ‖w‖₁ ≤ t is a diamond: the loss's level set first touches it at a corner, where coordinates are 0 | ‖w‖₂ ≤ t is a ball: touched at a generic point, all coordinates non-zero |
| result | **sparse** weights (feature selection); among correlated features picks one | **small, spread** weights; shares weight among correlated features; smooth, unique solution |

Because L2's pull vanishes as w → 0, it never finishes a weight off; L1's pull stays λ until the
weight reaches zero, so weights the data does not support strongly are driven to (and, with
proximal or annealed updates, held at) zero. L2 is the default for deep nets (differentiable,
stable, pairs with weight decay); L1 when sparsity is wanted (pruning, interpretability, feature
selection); elastic net combines both.

**The lab** trains the same wide MLP on 200 digits (as in 1.4.1) with L1 and with L2 penalties of
several strengths, picks each penalty's strength with the best validation loss, checks that the two
picks reach a matched validation score, and compares the weight histograms and the fraction of
near-zero weights (|w| < 10⁻³). With plain (sub)gradient steps L1 weights oscillate around 0 with an
amplitude ≈ η·λ; the cosine decay of the learning rate shrinks that amplitude to ≈ 0 at the end.
"""

NEAR_ZERO = 1e-3


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt
    import torch

    from goodfit.labs.lab_1_4_1 import digits_subset, train
    from goodfit.nn.penalty import WeightPenalty

    torch.set_num_threads(1)
    if ctx.quick:
        l2s, l1s, seeds, steps = [1e-3, 1e-2], [1e-4, 1e-3], [0], 200
    else:
        l2s, l1s, seeds, steps = [1e-3, 3e-3, 1e-2, 3e-2], [3e-5, 1e-4, 3e-4, 1e-3], [0, 1], 300

    # the formulas, against goodfit's penalty: value and gradient
    torch.manual_seed(0)
    w = torch.randn(50, requires_grad=True)
    pen = WeightPenalty([w], l1=0.3, l2=0.7)
    value = pen()
    value.backward()
    formula_ok = (torch.allclose(value, 0.3 * w.abs().sum() + 0.35 * (w ** 2).sum())
                  and torch.allclose(w.grad, 0.3 * torch.sign(w) + 0.7 * w))
    ctx.check(formula_ok, "goodfit's WeightPenalty is l1·Σ|w| + (l2/2)·Σw², with gradient l1·sign(w) + l2·w")

    runs = []  # (seed, kind, λ, val loss, val acc, weights)
    for seed in seeds:
        data = digits_subset(200, seed)
        for kind, lams in (("none", [0.0]), ("L2", l2s), ("L1", l1s)):
            for lam in lams:
                tl, vl, acc, weights = train(data, lam if kind == "L1" else 0.0, lam if kind == "L2" else 0.0,
                                             seed, steps)
                runs.append((seed, kind, lam, vl, acc, weights))

    def summary(kind, lam):
        sel = [r for r in runs if r[1] == kind and r[2] == lam]
        return (float(np.mean([r[3] for r in sel])), float(np.mean([r[4] for r in sel])),
                float(np.mean([np.mean(np.abs(r[5]) < NEAR_ZERO) for r in sel])), np.concatenate([r[5] for r in sel]))

    table = {(k, lam): summary(k, lam) for k, lams in (("none", [0.0]), ("L2", l2s), ("L1", l1s)) for lam in lams}
    ctx.table(f"mean over seeds {seeds}: validation score and the fraction of weights with |w| < {NEAR_ZERO:g}",
              ["penalty", "λ", "val loss", "val accuracy", "near-zero fraction"],
              [[k, lam, v[0], v[1], v[2]] for (k, lam), v in table.items()])
    best = {k: min(((k2, lam) for (k2, lam) in table if k2 == k), key=lambda key: table[key][0]) for k in ("L1", "L2")}
    (l1_vl, l1_acc, l1_zero, l1_w), (l2_vl, l2_acc, l2_zero, l2_w) = table[best["L1"]], table[best["L2"]]
    ctx.measure("best L1 (by val loss)", f"λ = {best['L1'][1]:g}: val loss {l1_vl:.3f}, acc {l1_acc:.3f}, "
                                         f"near-zero {l1_zero:.1%}")
    ctx.measure("best L2 (by val loss)", f"λ = {best['L2'][1]:g}: val loss {l2_vl:.3f}, acc {l2_acc:.3f}, "
                                         f"near-zero {l2_zero:.1%}")
    matched = abs(l1_vl - l2_vl) < 0.05 and abs(l1_acc - l2_acc) < 0.03
    ctx.check(matched, "the two best settings reach a matched validation score (val loss within 0.05, accuracy "
                       "within 0.03)", f"{l1_vl:.3f}/{l1_acc:.3f} vs {l2_vl:.3f}/{l2_acc:.3f}")
    ctx.check(l1_zero > 0.5 and l1_zero > 3 * l2_zero,
              f"at that matched score L1 leaves a much larger fraction of weights near zero (|w| < {NEAR_ZERO:g}): over "
              "half of them, and more than 3× L2's fraction", f"{l1_zero:.1%} vs {l2_zero:.1%}")
    none_w = summary("none", 0.0)[3]
    ctx.check(np.median(np.abs(l2_w)) < np.median(np.abs(none_w)),
              "L2 instead shrinks weights broadly: its median |w| is below the unregularized net's",
              f"{np.median(np.abs(l2_w)):.4f} vs {np.median(np.abs(none_w)):.4f}")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.3))
    bins = np.linspace(-8, 0, 81)
    for label, ws, color in (("none", none_w, "0.5"), (f"L2 λ={best['L2'][1]:g}", l2_w, "tab:blue"),
                             (f"L1 λ={best['L1'][1]:g}", l1_w, "tab:red")):
        ax1.hist(np.log10(np.abs(ws) + 1e-12), bins=bins, histtype="step", lw=1.5, color=color, label=label,
                 density=True)
    ax1.axvline(np.log10(NEAR_ZERO), color="k", ls=":", lw=1)
    ax1.set_xlabel("log₁₀ |w|")
    ax1.set_ylabel("density")
    ax1.set_title("weight magnitudes at matched val score")
    ax1.legend()
    lim = 0.15
    bins_lin = np.linspace(-lim, lim, 121)
    for label, ws, color in ((f"L2 λ={best['L2'][1]:g}", l2_w, "tab:blue"), (f"L1 λ={best['L1'][1]:g}", l1_w,
                                                                              "tab:red")):
        ax2.hist(np.clip(ws, -lim, lim), bins=bins_lin, histtype="step", lw=1.5, color=color, label=label)
    ax2.set_yscale("log")
    ax2.set_xlabel("w")
    ax2.set_title("L1: a spike at 0 (Laplace prior); L2: a bell (Gaussian)")
    ax2.legend()
    fig.tight_layout()
    ctx.figure(fig, "l1_vs_l2_weights")


LAB = Lab(id="1.4.2", title="L1 vs L2 regularization",
          question="L1正则化和L2正则化的数学形式分别是什么？二者在效果和原理上有哪些核心区别？ — L1 vs L2: formulas and effects.",
          answer=ANSWER, run=run, uses="L1, L2")
