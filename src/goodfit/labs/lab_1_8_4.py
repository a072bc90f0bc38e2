"""1.8.4 Adaptive optimizers vs SGD on badly scaled features: steps to a target loss, effective per-parameter LRs."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import torch

from goodfit.labs import Lab, LabContext

ANSWER = r"""
**SGD** uses one learning rate for every parameter: θ ← θ − η g. Its usable η is capped by the
sharpest direction of the loss (η < 2/λmax, see 1.8.1), so when curvature differs a lot between
parameters (condition number κ = λmax/λmin ≫ 1) the flat directions crawl at a rate ≈ 1 − 2/κ.

**Adaptive methods** give every parameter its own step by dividing by a running size of its own
gradient (all operations elementwise):

- **Adagrad**: G ← G + g², θ ← θ − η g / (√G + ε). The *effective LR* η/(√G + ε) can only shrink:
  G is a sum of squares. Good for sparse features (rare features keep a large step), but over a long
  run the steps decay like 1/√t and training can stall.
- **RMSprop**: v ← αv + (1 − α) g², θ ← θ − η g / (√v + ε). An exponential average instead of a sum,
  so the effective LR tracks the *recent* gradient scale and does not die out.
- **Adam**: RMSprop's denominator plus momentum m ← β₁m + (1 − β₁)g and bias corrections
  m̂ = m/(1 − β₁ᵗ), v̂ = v/(1 − β₂ᵗ): θ ← θ − η m̂ / (√v̂ + ε). The step is ≈ η·sign-ish in size,
  about η per parameter whatever the raw gradient scale.

Dividing by the gradient's own scale is a **diagonal preconditioner**: when the ill-conditioning is
aligned with the parameter axes — e.g. input features on very different scales — it removes most of
it, and one η serves all coordinates. That is the advantage: fast progress without per-feature
tuning, robustness to gradient scale, and a tolerant LR. The problems: the preconditioner is only
diagonal (correlated, rotated ill-conditioning stays); Adagrad's LR decays forever; Adam's effective
LR can *grow* when gradients shrink (a source of late instability, cured by AMSGrad or a decaying
schedule); the noise-normalized steps do not converge to the exact minimum without LR decay; Adam
with L2 regularization is not weight decay (4.2); and on some tasks adaptive methods generalize
worse than well-tuned SGD with momentum. The optimizer state also costs 1–2 extra copies of the
parameters.

The lab trains a softmax regression on the digits with badly scaled inputs (goodfit's
`data.perturb.feature_scale = 100`: feature j multiplied by 100^(j/63)), full batch, each
optimizer (goodfit's `OPTIMIZERS` by name) at every LR of the same grid, on random 80 % subsets of
the training split (one per seed), and counts the steps to a target training loss.
"""

GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
QUICK_GRID = (3e-3, 1e-2, 3e-2)   # quick mode: the part of GRID where every method's best LR lies
METHODS = ("sgd", "adam", "rmsprop", "adagrad")
TARGET = 0.2          # training cross-entropy (≈ 95 % training accuracy)
FEATURE_SCALE = 100.0
MARGIN = 3.0          # each adaptive method must need at most 1/MARGIN of SGD's steps


def load():
    from goodfit.data import load_data
    from goodfit.recipe import load_recipe

    recipe = load_recipe("digits-mlp", {"data": {"perturb": {"feature_scale": FEATURE_SCALE}}})
    data = load_data(recipe.data, recipe.task, 0)
    return data.x_train.flatten(1), data.y_train


def conditioning(x: torch.Tensor) -> tuple[float, float]:
    """(κ of the nonzero spectrum of [x, 1]ᵀ[x, 1]/n, max/min nonzero feature second moment). The softmax
    cross-entropy's Hessian at w = 0 is (I − 11ᵀ/K)/K ⊗ [x, 1]ᵀ[x, 1]/n: it has the same κ."""
    xt = torch.cat([x, torch.ones(len(x), 1)], 1).double()
    ev = torch.linalg.eigvalsh(xt.T @ xt / len(xt))
    ev = ev[ev > 1e-9 * ev.max()]
    m2 = (x.double() ** 2).mean(0)
    m2 = m2[m2 > 0]
    return float(ev.max() / ev.min()), float(m2.max() / m2.min())


def effective_lr(name: str, state: dict, lr: float, group: dict) -> torch.Tensor:
    """η / (√(second-moment estimate) + ε), per element, as the optimizer applies it at its next step."""
    if name == "adagrad":
        return lr / (state["sum"].sqrt() + group["eps"])
    if name == "rmsprop":
        return lr / (state["square_avg"].sqrt() + group["eps"])
    step = float(state["step"])
    v_hat = state["exp_avg_sq"] / (1 - group["betas"][1] ** step)
    return lr / (v_hat.sqrt() + group["eps"])


def train(name: str, x, y, subsets, steps: int, grid, momentum: float = 0.0, track: bool = False):
    """Full-batch training of one softmax regression per (seed, LR) at once (one param group each).
    Returns losses [steps, seeds, lrs] and, if track, the effective LRs of seed 0's first-layer weights."""
    from goodfit.optim.optimizers import OPTIMIZERS

    g_count = len(grid)
    weights, biases, groups = [], [], []
    for seed in range(len(subsets)):
        gen = torch.Generator().manual_seed(seed)
        ws = [(0.01 * torch.randn(x.shape[1], 10, generator=gen)).requires_grad_() for _ in grid]
        bs = [torch.zeros(10, requires_grad=True) for _ in grid]
        weights.append(ws)
        biases.append(bs)
        groups += [{"params": [w, b], "lr": lr} for w, b, lr in zip(ws, bs, grid)]
    opt = OPTIMIZERS[name](groups, SimpleNamespace(lr=grid[0], momentum=momentum))
    parts = [(x[idx], y[idx]) for idx in subsets]
    losses = np.zeros((steps, len(subsets), g_count))
    tracked = []
    for k in range(steps):
        opt.zero_grad(set_to_none=True)
        per_seed = []
        for (xs, ys), ws, bs in zip(parts, weights, biases):
            # all LRs of one seed in one matmul: [n, 64] @ [64, G·10]
            logits = (xs @ torch.cat(ws, 1) + torch.cat(bs)).view(len(xs), g_count, 10)
            nll = -logits.log_softmax(-1).gather(2, ys.view(-1, 1, 1).expand(-1, g_count, 1)).squeeze(2)
            per_seed.append(nll.mean(0))
        loss = torch.stack(per_seed)
        loss.sum().backward()  # independent problems: the sum's gradient is each one's own
        losses[k] = loss.detach().numpy()
        opt.step()
        if track:
            tracked.append(torch.stack([effective_lr(name, opt.state[w], lr, opt.param_groups[i])
                                        for i, (w, lr) in enumerate(zip(weights[0], grid))]))
    return losses, (torch.stack(tracked) if track else None)


def steps_to(losses: np.ndarray, target: float) -> np.ndarray:
    """First step (1-based) at which the loss is below target, per (seed, lr); inf if never."""
    below = losses < target
    return np.where(below.any(0), below.argmax(0) + 1.0, np.inf)


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt
    from scipy.stats import spearmanr

    torch.set_num_threads(1)
    seeds = 2 if ctx.quick else 3
    steps = 150 if ctx.quick else 300
    grid = QUICK_GRID if ctx.quick else GRID
    x, y = load()
    kappa, diag_kappa = conditioning(x)
    plain_kappa, plain_diag = conditioning(x / torch.as_tensor(
        FEATURE_SCALE ** (np.arange(x.shape[1]) / (x.shape[1] - 1)), dtype=x.dtype))
    ctx.measure("Hessian condition number at w = 0 (nonzero spectrum), badly scaled digits", kappa)
    ctx.measure("same, digits as loaded (no extra scaling)", plain_kappa)
    ctx.measure("ratio of largest to smallest feature second moment, scaled / as loaded",
                f"{diag_kappa:.3g} / {plain_diag:.3g}")
    ctx.check(kappa >= 100 and diag_kappa >= 1e3, "the problem is ill-conditioned: κ ≥ 100, and the feature scales "
              "alone spread the diagonal of the Hessian by ≥ 10³", f"κ = {kappa:.3g}, diagonal {diag_kappa:.3g}")

    subsets = [torch.as_tensor(np.random.default_rng([184, s]).permutation(len(x))[: int(0.8 * len(x))])
               for s in range(seeds)]
    results, tracked = {}, {}
    for name in METHODS:
        losses, eff = train(name, x, y, subsets, steps, grid, track=name != "sgd")
        results[name] = losses
        tracked[name] = eff
    if not ctx.quick:
        results["sgd + momentum 0.9 (reference)"], _ = train("sgd", x, y, subsets, steps, grid, momentum=0.9)

    rows, best = [], {}
    for name, losses in results.items():
        hit = steps_to(losses, TARGET)               # [seeds, lrs]
        best[name] = hit.min(1)                      # each seed at its best LR of the grid
        lr_best = [grid[int(np.argmin(h))] if np.isfinite(h.min()) else None for h in hit]
        final = losses[-1][np.arange(seeds), np.argmin(hit, 1)]
        rows.append([name, *[f"{np.median(hit[:, j]):.0f}" if np.isfinite(np.median(hit[:, j])) else f"> {steps}"
                             for j in range(len(grid))],
                     " / ".join(f"{b:.0f}" if np.isfinite(b) else f">{steps}" for b in best[name]),
                     " / ".join(f"{lr:g}" if lr else "–" for lr in lr_best), float(np.mean(final))])
    ctx.table(f"full-batch steps to training loss < {TARGET} (median over {seeds} seeds per LR; best LR per seed; "
              f"budget {steps} steps)", ["optimizer", *[f"lr {lr:g}" for lr in grid], "steps at best LR (per seed)",
                                         "best LR", "final loss at best LR"], rows)
    sgd = np.where(np.isfinite(best["sgd"]), best["sgd"], steps + 1)
    for name in METHODS[1:]:
        ratio = sgd / best[name]
        ctx.check(bool(np.all(np.isfinite(best[name])) and np.all(ratio >= MARGIN)),
                  f"{name} at its best grid LR reaches loss {TARGET} in ≤ 1/{MARGIN:g} of SGD's steps at SGD's best LR, "
                  "every seed (SGD not reaching it counts as the budget + 1)",
                  "SGD/" + name + " step ratio " + ", ".join(f"{r:.1f}" for r in ratio))

    # ------------------------------------------------------------ effective per-parameter LRs
    lr_at = {name: grid[int(np.argmin(steps_to(results[name], TARGET)[0]))] for name in METHODS[1:]}
    eff = {name: tracked[name][:, grid.index(lr_at[name])] for name in METHODS[1:]}  # [steps, 64, 10]
    active = tracked["adagrad"][-1, grid.index(lr_at["adagrad"])] < 1e6  # parameters that ever had a gradient
    ada = eff["adagrad"][:, active]
    monotone = bool(torch.all(ada[1:] <= ada[:-1]))
    decay = float((ada[0] / ada[-1]).median())
    ctx.measure("Adagrad (best LR, seed 0): parameters with a gradient / total", f"{int(active.sum())} / {active.numel()}")
    ctx.measure(f"Adagrad effective LR, step 1 → step {steps}: median decay factor", decay)
    ctx.check(monotone and decay > 2, "Adagrad's effective LR η/(√G + ε) never increases, for every parameter at every "
              f"step, and falls by > 2× (median) over the run", f"{decay:.1f}×")
    adam = eff["adam"][:, active]
    grew = float(((adam[-1] / adam.min(0).values) > 1.5).float().mean())
    ctx.measure("Adam effective LR η/(√v̂ + ε): fraction of parameters ending > 1.5× above their minimum", grew)
    ctx.check(grew > 0.1, "Adam's effective LR is not monotone: for > 10 % of the parameters it ends > 1.5× above its "
              "own minimum (v̂ forgets the large early gradients as the loss falls)", f"{grew:.0%}")
    scale = torch.as_tensor(FEATURE_SCALE ** (np.arange(x.shape[1]) / (x.shape[1] - 1)))
    rhos = {}
    for name in METHODS[1:]:
        e = eff[name][-1].where(active, torch.tensor(float("nan"))).nanmean(1)  # per input feature
        keep = ~e.isnan()
        rhos[name] = float(spearmanr(scale[keep].numpy(), e[keep].numpy())[0])
    ctx.table("rank correlation between an input feature's scale factor and its weights' effective LR at the end",
              ["optimizer", "best LR", "Spearman ρ"], [[n, lr_at[n], rhos[n]] for n in METHODS[1:]])
    ctx.check(all(r < -0.8 for r in rhos.values()), "every adaptive method gives the weights of large-scale features "
              "smaller effective LRs (Spearman ρ < −0.8): a diagonal preconditioner undoing the feature scaling",
              ", ".join(f"{n} {r:.2f}" for n, r in rhos.items()))

    # ------------------------------------------------------------ figure
    fig, axes = plt.subplots(1, 4, figsize=(21, 4.6))
    colors = {"sgd": "tab:gray", "adam": "tab:blue", "rmsprop": "tab:orange", "adagrad": "tab:green",
              "sgd + momentum 0.9 (reference)": "k"}
    for name, losses in results.items():
        hit = steps_to(losses, TARGET)[0]
        j = int(np.argmin(hit))  # all inf: the first LR
        axes[0].semilogy(np.arange(1, steps + 1), losses[:, 0, j], color=colors[name], label=f"{name} (lr {grid[j]:g})",
                         ls="--" if "reference" in name else "-")
        med = np.median(steps_to(losses, TARGET), 0)
        axes[1].plot(grid, np.where(np.isfinite(med), med, steps * 1.1), marker="o", color=colors[name], label=name,
                     ls="--" if "reference" in name else "-")
    axes[0].axhline(TARGET, color="tab:red", ls=":", lw=1)
    axes[0].set_xlabel("full-batch step")
    axes[0].set_ylabel("training cross-entropy")
    axes[0].set_title("loss at each method's best LR (seed 0)")
    axes[0].legend(fontsize=7)
    axes[1].set_xscale("log")
    axes[1].set_xticks(grid, [f"{lr:g}" for lr in grid])
    axes[1].minorticks_off()
    axes[1].axhline(steps, color="0.6", lw=0.7)
    axes[1].set_xlabel("learning rate")
    axes[1].set_ylabel(f"steps to loss {TARGET} (median; above the line: never)")
    axes[1].set_title("the LR grid")
    axes[1].legend(fontsize=7)
    k = np.arange(1, steps + 1)
    for name in METHODS[1:]:
        e = eff[name][:, active]
        q = torch.quantile(e.log10().float(), torch.tensor([0.1, 0.5, 0.9]), dim=1).numpy()
        axes[2].plot(k, q[1], color=colors[name], label=f"{name} (median, 10–90 %)")
        axes[2].fill_between(k, q[0], q[2], color=colors[name], alpha=0.15)
    axes[2].set_xlabel("step")
    axes[2].set_ylabel("log10 effective LR  η/(√(second moment) + ε)")
    axes[2].set_title("per-parameter effective LRs over training")
    axes[2].legend(fontsize=7)
    for name in METHODS[1:]:
        e = eff[name][-1].where(active, torch.tensor(float("nan"))).nanmean(1)
        axes[3].loglog(scale.numpy(), e.numpy(), "o", ms=3, color=colors[name], label=f"{name} (ρ = {rhos[name]:.2f})")
    ref = eff["adagrad"][-1].where(active, torch.tensor(float("nan"))).nanmean(1)
    mid = float(np.nanmedian(ref.numpy()))
    axes[3].loglog(scale.numpy(), mid * math.sqrt(FEATURE_SCALE) / scale.numpy(), "k:", lw=1, label="∝ 1/scale")
    axes[3].set_xlabel("input feature's scale factor")
    axes[3].set_ylabel("effective LR of its weights (end, mean over classes)")
    axes[3].set_title("adaptive LR ≈ 1 / gradient scale")
    axes[3].legend(fontsize=7)
    ctx.figure(fig, "adaptive_vs_sgd")


LAB = Lab(id="1.8.4", title="Adaptive optimizers vs SGD",
          question="自适应学习率优化器（如Adam、RMSprop、Adagrad）的学习率调整逻辑与传统SGD的固定学习率有何不同？它们的优势和潜在问题分别是什么？"
                   " — Adaptive optimizers vs SGD.",
          answer=ANSWER, run=run, uses="optimizers (goodfit.optim.optimizers.OPTIMIZERS)")
