"""1.8.7 Batch size and LR through the variance of the gradient estimate: Var ∝ 1/B, noise scale, critical batch."""
from __future__ import annotations

import shutil

import numpy as np

from goodfit.labs import Lab, LabContext

ANSWER = r"""
The loss is an average over N examples, L = (1/N) Σᵢ ℓᵢ, with full gradient G = (1/N) Σᵢ gᵢ and per-example
covariance Σ = (1/N) Σᵢ (gᵢ − G)(gᵢ − G)ᵀ. A mini-batch of B examples drawn independently gives

  G_B = (1/B) Σ_{i∈batch} gᵢ,  E[G_B] = G,  Cov(G_B) = Σ/B,  **E|G_B − G|² = tr Σ / B**,
  E|G_B|² = |G|² + tr Σ / B.

(Drawn without replacement from a finite set the variance is tr Σ/B · (N − B)/(N − 1): it reaches 0 at B = N.)

**Why the LR should grow with B.** The step −ηG_B has mean −ηG and noise covariance η²Σ/B.
- Signal: the expected decrease of L in one step, to second order with curvature H, is
  ΔL ≈ −η|G|² + (η²/2)(GᵀHG + tr(HΣ)/B). Its best LR is
  **η_opt(B) = η_max / (1 + B_noise/B)** with η_max = |G|²/GᵀHG and the **noise scale
  B_noise = tr(HΣ)/GᵀHG** (McCandlish et al. 2018). For B ≪ B_noise, η_opt ≈ η_max·B/B_noise grows
  **linearly** with B: the noise limits the step, and averaging B times more examples lets you take
  a B-times larger one. For B ≫ B_noise, η_opt → η_max: the curvature limits the step, and a larger
  batch no longer buys a larger LR (or fewer steps).
- Noise: SGD's stationary fluctuations scale with η/B (its temperature); keeping η/B fixed keeps
  the trajectory per epoch and the implicit regularization the same (linear rule, Goyal et al. 2017).
  Keeping the update variance η²·tr Σ/B fixed instead gives the sqrt rule η ∝ √B (Hoffer et al. 2017),
  the one that suits Adam-type optimizers.

**Estimating it.** With H ∝ I, B_noise becomes the **simple noise scale B_simple = tr Σ/|G|²**,
measurable from gradient norms alone: E|G_B|² is linear in 1/B with intercept |G|² and slope tr Σ, so
two batch sizes suffice (McCandlish et al., app. A.1):
|G|² ≈ (B_big|G_big|² − B_small|G_small|²)/(B_big − B_small), tr Σ ≈ (|G_small|² − |G_big|²)/(1/B_small − 1/B_big).
The **critical batch** B_crit ≈ B_noise ≈ B_simple is the turning point between "bigger batch ⇒
proportionally fewer steps" and "bigger batch ⇒ wasted examples". It grows during training,
as |G| shrinks faster than the noise.

**The lab.** digits-mlp (1258 training examples) at initialization and after 5 epochs of training:
E|G_B − G|² and E|G_B|² measured at many B (eval mode, draws with replacement), the log-log slope of the
variance, B_simple by the two-batch estimator and directly from the full gradient.
"""

SEED = 0              # of the mini-batch draws
# Tolerances (relative), at init / after training; over 12 draw seeds in quick mode the largest deviations were
# 4.8 % / 22.8 % (two-batch B_simple vs exact) and 3.7 % / 11.9 % (B·variance vs exact tr Σ): after training a
# few misclassified examples carry most of tr Σ, so every mini-batch estimate is heavier-tailed
TWO_BATCH_TOL = {"init": 0.15, "trained": 0.4}
VAR_TOL = {"init": 0.1, "trained": 0.25}
POP_TOL = 0.15        # without replacement: measured / (tr Σ/B · (N − B)/(N − 1)) within this, at the largest B


def per_example(model, x, y, chunk: int = 256):
    """(mean_i |g_i|², G = mean_i g_i) from every per-example gradient of the cross-entropy (torch.func), eval mode."""
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}

    def one(p, xi, yi):
        return F.cross_entropy(functional_call(model, p, (xi[None],)), yi[None])

    was_training = model.training
    model.eval()
    try:
        sq, total = 0.0, None
        for i in range(0, len(x), chunk):
            g = vmap(grad(one), in_dims=(None, 0, 0))(params, x[i:i + chunk], y[i:i + chunk])
            flat = torch.cat([v.flatten(1).double() for v in g.values()], 1)
            sq += flat.pow(2).sum().item()
            total = flat.sum(0) if total is None else total + flat.sum(0)
    finally:
        model.train(was_training)
    return sq / len(x), total / len(x)


def measure(model, loss_fn, x, y, batches, draws, seed):
    """Per B: with-replacement variance and E|G_B|², and the without-replacement variance."""
    import torch

    from goodfit.optim.batch_size import full_gradient, gradient_stats

    full = full_gradient(model, loss_fn, x, y)
    mean_sq, mean_g = per_example(model, x, y)
    gap = (full - mean_g).abs().max().item() / full.abs().max().item()
    with_r, without = [], []
    for b in batches:
        with_r.append(gradient_stats(model, loss_fn, x, y, b, draws, torch.Generator().manual_seed(seed + b),
                                     full=full))
        without.append(gradient_stats(model, loss_fn, x, y, b, draws, torch.Generator().manual_seed(seed + b),
                                      replacement=False, full=full))
    return full.dot(full).item(), mean_sq - mean_g.dot(mean_g).item(), gap, with_r, without


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt
    import torch

    import goodfit
    from goodfit.optim.batch_size import critical_batch_size, gradient_noise_scale
    from goodfit.recipe import load_recipe
    from goodfit.runner import build, resolve

    torch.set_num_threads(1)
    batches = [4, 8, 16, 32, 64] if ctx.quick else [2, 4, 8, 16, 32, 64, 128, 256, 512]
    draws = 64 if ctx.quick else 192
    runs_root = ctx.out / "runs"
    shutil.rmtree(runs_root, ignore_errors=True)  # this lab's own scratch folder
    base = ["train.threads=1", "train.early_stopping.patience=null"]
    parts = build(resolve(load_recipe("digits-mlp", base)), progress=False)
    init_model, loss_fn = parts.trainer.model, parts.trainer.loss_fn
    x, y = parts.data.x_train, parts.data.y_train
    n = len(x)
    trained = goodfit.run("digits-mlp", [*base, "train.epochs=5"], out=runs_root, progress=False)
    ctx.log(f"trained model: 5 epochs, val accuracy {trained.history[-1]['val_accuracy']:.3f}")

    results = {}
    for label, model in [("init", init_model), ("trained", trained.model)]:
        grad_sq, trace, gap, with_r, without = measure(model, loss_fn, x, y, batches, draws, SEED)
        var = np.array([s.variance for s in with_r])
        slope = float(np.polyfit(np.log(batches), np.log(var), 1)[0])
        noise = gradient_noise_scale(model, loss_fn, x, y, 16, 1024, 4 * draws, torch.Generator().manual_seed(SEED + 1))
        results[label] = {"gap": gap, "grad_sq": grad_sq, "var": var, "slope": slope, "trace": trace,
                          "direct": trace / grad_sq,
                          "noise": noise, "sq": np.array([s.mean_sq_norm for s in with_r]),
                          "without": np.array([s.variance for s in without])}

    rows = []
    for i, b in enumerate(batches):
        r0, r1 = results["init"], results["trained"]
        rows.append([b, r0["var"][i], r0["var"][i] * b, r0["without"][i], r0["trace"] / b * (n - b) / (n - 1),
                     r1["var"][i], r1["var"][i] * b])
    ctx.table(f"mini-batch gradient variance, {draws} draws per B (N = {n})",
              ["B", "E|G_B−G|² init", "× B", "without replacement", "tr Σ/B·(N−B)/(N−1)", "trained", "× B"], rows)
    summary = []
    for label, r in results.items():
        ns = r["noise"]
        summary.append([label, r["slope"], r["grad_sq"], r["trace"], r["direct"], ns.grad_sq, ns.trace_cov,
                        ns.b_simple, critical_batch_size(ns)])
    ctx.table("noise scale: exact (|G|² and tr Σ from all per-example gradients) vs the two-batch estimator "
              "(B = 16, 1024)",
              ["model", "log-log slope", "|G|²", "tr Σ", "tr Σ/|G|²", "|G|² (2-batch)", "tr Σ (2-batch)",
               "B_simple (2-batch)", "B_crit ≈ B_simple"], summary)
    r0, r1 = results["init"], results["trained"]
    ctx.measure("log-log slope of E|G_B − G|² vs B, at init / trained", f"{r0['slope']:.3f} / {r1['slope']:.3f}")
    ctx.measure("gradient noise scale B_simple at init (two-batch estimator)", r0["noise"].b_simple)
    ctx.measure("critical batch size B_crit ≈ B_simple after 5 epochs", critical_batch_size(r1["noise"]))

    ctx.check(all(-1.2 <= r["slope"] <= -0.8 for r in results.values()),
              "the mini-batch gradient variance falls as 1/B: log-log slope in [−1.2, −0.8] at init and after training",
              f"{r0['slope']:.3f}, {r1['slope']:.3f}")
    gap = max(r["gap"] for r in results.values())
    ctx.check(gap < 1e-5, "the per-example gradients (torch.func) average to the full-batch gradient (max relative "
                          "difference < 1e-5): tr Σ below is exact, not estimated", f"{gap:.1e}")
    ratio = {k: float(np.mean(r["var"] * np.array(batches))) / r["trace"] for k, r in results.items()}
    ctx.check(all(abs(q - 1) < VAR_TOL[k] for k, q in ratio.items()),
              f"B·E|G_B − G|² averaged over B equals the exact tr Σ within {VAR_TOL['init']:.0%} at init and "
              f"{VAR_TOL['trained']:.0%} after training", ", ".join(f"{q:.3f}" for q in ratio.values()))
    agree = {k: abs(r["noise"].b_simple / r["direct"] - 1) for k, r in results.items()}
    ctx.check(all(a < TWO_BATCH_TOL[k] for k, a in agree.items()),
              f"the two-batch estimate of B_simple (from |G_B|² at B = 16 and 1024 only) agrees with the exact "
              f"tr Σ/|G|² within {TWO_BATCH_TOL['init']:.0%} at init and {TWO_BATCH_TOL['trained']:.0%} after training",
              ", ".join(f"{a:.1%}" for a in agree.values()))
    grow = r1["noise"].b_simple / r0["noise"].b_simple
    ctx.check(grow > 2, "the critical batch grows during training (B_simple after 5 epochs > 2× its initial value): "
                        "the gradient shrinks faster than its noise", f"{grow:.1f}×")
    pop = r0["without"][-1] / (r0["trace"] / batches[-1] * (n - batches[-1]) / (n - 1))
    ctx.check(abs(pop - 1) < POP_TOL,
              f"sampling without replacement follows tr Σ/B·(N − B)/(N − 1) at B = {batches[-1]} (within {POP_TOL:.0%})",
              f"ratio {pop:.3f}")

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.3))
    bs = np.array(batches, float)
    for label, r, c in [("init", r0, "tab:blue"), ("trained", r1, "tab:orange")]:
        axes[0].plot(bs, r["var"], "o-", color=c, label=f"{label}: slope {r['slope']:.2f}")
        axes[0].plot(bs, r["trace"] / bs, ":", color=c)
        axes[0].plot(bs, r["without"], "x", color=c, label=f"{label}: without replacement")
        axes[1].plot(1 / bs, r["sq"], "o", color=c, label=f"{label}: E|G_B|²")
        axes[1].plot(1 / bs, r["grad_sq"] + r["trace"] / bs, "-", color=c, lw=0.8,
                     label=f"|G|² + tr Σ/B (B_simple {r['direct']:.3g})")
    axes[0].set(xscale="log", yscale="log", xlabel="batch size B", ylabel="E|G_B − G|²",
                title="gradient variance (dotted: tr Σ/B)")
    axes[0].legend(fontsize=7)
    axes[1].set(xscale="log", yscale="log", xlabel="1/B", title="E|G_B|²: intercept |G|², slope tr Σ")
    axes[1].legend(fontsize=7)
    grid = np.geomspace(1, 4 * n, 100)
    for label, r, c in [("init", r0, "tab:blue"), ("trained", r1, "tab:orange")]:
        b_crit = r["noise"].b_simple
        axes[2].plot(grid, 1 / (1 + b_crit / grid), color=c, label=f"{label}: B_crit ≈ {b_crit:.3g}")
        axes[2].axvline(b_crit, color=c, ls=":")
    axes[2].plot(grid, grid / r0["noise"].b_simple, "--", color="grey", lw=0.8, label="B/B_noise: the linear rule")
    axes[2].set(xscale="log", yscale="log", ylim=(1e-3, 1.5), xlabel="batch size B", ylabel="η_opt / η_max",
                title="η_opt(B) = η_max/(1 + B_noise/B), measured B_noise")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    ctx.figure(fig, "gradient_variance_noise_scale")


LAB = Lab(id="1.8.7", title="Batch size and LR via gradient variance",
          question="批量大小与学习率之间的适配关系是什么？为什么增大批量大小时，通常需要同步增大学习率？请结合梯度估计的方差说明。 — "
                   "Batch size–LR relation via gradient-estimate variance.",
          answer=ANSWER, run=run, uses="noise scale")
