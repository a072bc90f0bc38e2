"""1.4.1 What regularization is for: an L2 sweep on an overfitting net (weight norm, gap, val optimum)."""
from __future__ import annotations

import numpy as np

from goodfit.labs import Lab, LabContext

ANSWER = r"""
**Regularization** is anything that lowers a model's *generalization gap* (test error − training
error) more than it raises its training error. An over-parameterized net can fit its training set
in many ways, including memorizing noise; regularization expresses a preference among those fits
for "simpler" ones, so that fewer of the training set's accidents are learned. In the bias–variance
picture it trades a little bias for a large cut in variance.

Ways to express the preference:
- **penalize complexity in the loss**: L̃(w) = L(w) + λ·Ω(w), e.g. Ω = ½‖w‖² (**L2**) or ‖w‖₁ (L1);
  in Bayesian terms the MAP estimate under a Gaussian (L2) or Laplace (L1) prior on w;
- **constrain the optimization**: early stopping, weight decay, small learning rates / few steps
  (all keep w near its small initialization);
- **inject noise / data**: dropout, data augmentation, mixup, label smoothing;
- **architecture**: weight sharing (convolutions), normalization, fewer parameters.

**How L2 fights overfitting.** The penalty's gradient λw pulls every weight toward 0 in proportion
to its size: weights that the data supports strongly stay large, weights that only fit a few
examples decay. Small weights make the function smoother (for a net, ‖∂f/∂x‖ is bounded by products
of layer norms) and the softmax less confident, so individual training points, noise included,
pull less. λ sets the trade: λ = 0 fits the training set perfectly with large, confident weights
(big gap); too large a λ cannot fit even the training set (underfitting); in between the validation
score is best. λ is chosen on validation data, on a log scale.

**The lab** trains a wide MLP (64 → 256 → 256 → 10) on 200 digits (full batch, Adam with cosine
decay, L2 penalty (λ/2)‖W‖² on the weight matrices via goodfit's `WeightPenalty`) for a sweep of
λ, then measures the weights' norm, the train/validation losses and their gap, and the validation
score.
"""

LAMBDAS = [0.0, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
QUICK_LAMBDAS = [0.0, 1e-3, 1e-2, 1e-1]


def train(data, l1: float, l2: float, seed: int, steps: int):
    """A 64-256-256-10 MLP trained full-batch with Adam (lr 3e-3, cosine) and a weight penalty;
    returns (train loss, val loss, val accuracy, flat weight matrices)."""
    import torch

    from goodfit.data import TensorLoader
    from goodfit.engine import Trainer
    from goodfit.losses import cross_entropy
    from goodfit.models import build_model
    from goodfit.nn.penalty import WeightPenalty
    from goodfit.optim.schedules import warmup_cosine
    from goodfit.recipe import Model

    torch.manual_seed(seed)
    model = build_model(Model(name="mlp", width=256, depth=2, norm="none", dropout=0.0), (64,), 10)
    weights = [p for p in model.parameters() if p.ndim > 1]
    trainer = Trainer(model=model, loss_fn=cross_entropy, optimizer=torch.optim.Adam(model.parameters(), lr=3e-3),
                      train_loader=TensorLoader(data.x_train, data.y_train, len(data.x_train), shuffle=False),
                      epochs=steps, schedule=warmup_cosine,
                      penalty=WeightPenalty(weights, l1=l1, l2=l2) if (l1 or l2) else None)
    trainer.fit()
    model.eval()
    with torch.no_grad():
        out = model(data.x_val)
        train_loss = cross_entropy(model(data.x_train), data.y_train).item()
        val_loss, acc = cross_entropy(out, data.y_val).item(), (out.argmax(1) == data.y_val).float().mean().item()
    return train_loss, val_loss, acc, torch.cat([w.detach().flatten() for w in weights]).numpy()


def digits_subset(n: int, seed: int):
    from goodfit.data import load_data
    from goodfit.recipe import load_recipe

    recipe = load_recipe("digits-mlp", {"data.perturb.subset": n, "seed": seed})
    return load_data(recipe.data, recipe.task, seed)


def rank_correlation(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt
    import torch

    torch.set_num_threads(1)
    lambdas, seeds, steps = (QUICK_LAMBDAS, [0], 150) if ctx.quick else (LAMBDAS, [0, 1, 2], 300)
    ctx.log(f"200 training digits (stratified subset), val = the full validation split; {steps} full-batch steps; "
            f"λ ∈ {lambdas}; seeds {seeds} (each seed re-draws the subset, the split and the init)")
    res = np.zeros((len(seeds), len(lambdas), 4))  # train loss, val loss, val acc, ‖W‖
    for i, seed in enumerate(seeds):
        data = digits_subset(200, seed)
        for j, lam in enumerate(lambdas):
            tl, vl, acc, w = train(data, 0.0, lam, seed, steps)
            res[i, j] = tl, vl, acc, np.linalg.norm(w)
    mean = res.mean(0)
    gap = res[:, :, 1] - res[:, :, 0]
    ctx.table("L2 sweep (mean over seeds): weight norm ‖W‖₂ of all weight matrices, losses, gap = val − train loss",
              ["λ", "‖W‖", "train loss", "val loss", "gap", "val accuracy"],
              [[lam, mean[j, 3], mean[j, 0], mean[j, 1], float(gap[:, j].mean()), mean[j, 2]]
               for j, lam in enumerate(lambdas)])

    norms_fall = all(np.all(np.diff(res[i, :, 3]) < 0) for i in range(len(seeds)))
    ctx.check(norms_fall, "the weight norm falls strictly with every increase of λ, in every seed",
              " → ".join(f"{v:.1f}" for v in mean[:, 3]))
    g = gap.mean(0)
    rho = rank_correlation(lambdas, g)
    ctx.measure("gap (val − train loss) by λ", " → ".join(f"{v:.3f}" for v in g))
    ctx.check(g[-1] < 0.5 * g[0] and rho <= -0.8,
              "the generalization gap falls with λ: at the largest λ below half of λ = 0's, rank correlation "
              "with λ ≤ −0.8 (mean over seeds)", f"{g[-1]:.3f} vs {g[0]:.3f}, ρ = {rho:.2f}")
    vl = mean[:, 1]
    best = int(vl.argmin())
    ctx.measure("best λ by mean val loss", lambdas[best])
    ctx.check(0 < best < len(lambdas) - 1 and vl[best] < 0.8 * vl[0] and vl[best] < 0.8 * vl[-1],
              "the validation loss has an interior optimum: best at an intermediate λ, at least 20% below both λ = 0 "
              "(overfitting) and the largest λ (underfitting)",
              f"λ = {lambdas[best]:g}: {vl[best]:.3f} vs {vl[0]:.3f} (λ = 0) and {vl[-1]:.3f} (λ = {lambdas[-1]:g})")
    ctx.check(mean[-1, 0] > 10 * mean[0, 0] + 0.05,
              "too much L2 underfits: the largest λ's training loss is far above λ = 0's (no longer fits the "
              "training set)", f"{mean[-1, 0]:.3f} vs {mean[0, 0]:.4f}")

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.2))
    xs = np.arange(len(lambdas))
    labels = [f"{lam:g}" for lam in lambdas]
    ax1.plot(xs, mean[:, 3], "o-")
    ax1.set_ylabel("‖W‖₂ (all weight matrices)")
    ax1.set_title("weights shrink")
    ax2.plot(xs, mean[:, 0], "o-", label="train loss")
    ax2.plot(xs, mean[:, 1], "s-", label="val loss")
    ax2.fill_between(xs, mean[:, 0], mean[:, 1], alpha=0.15, label="gap")
    ax2.set_title("gap closes; too much λ underfits")
    ax2.legend()
    ax3.plot(xs, vl, "s-", color="tab:orange", label="val loss")
    ax3.axvline(best, color="tab:green", ls=":", label=f"best λ = {lambdas[best]:g}")
    ax3b = ax3.twinx()
    ax3b.plot(xs, mean[:, 2], "^-", color="tab:purple", label="val accuracy")
    ax3b.set_ylabel("val accuracy")
    ax3.set_title("interior optimum")
    ax3.legend(loc="upper center")
    for ax in (ax1, ax2, ax3):
        ax.set_xticks(xs, labels)
        ax.set_xlabel("λ (L2)")
    fig.tight_layout()
    ctx.figure(fig, "l2_sweep")


LAB = Lab(id="1.4.1", title="What regularization is for",
          question="正则化的核心目的是什么？它是如何缓解过拟合的？ — Purpose of regularization; how it fights overfitting.",
          answer=ANSWER, run=run, uses="L2")
