"""4.2 Weight decay and L1/L2: coupled vs decoupled decay under Adam, no decay on norm/bias, sparsity under L1."""
from __future__ import annotations

import numpy as np
import torch

from goodfit.labs import Lab, LabContext

ANSWER = r"""
**L2 regularization** adds (λ/2)‖w‖² to the loss; its gradient λw pulls every weight toward 0.
**Weight decay** shrinks the weights directly, w ← w − ηλw, outside the gradient. For plain SGD the
two are the same update, θ ← θ − η(∇L + λθ). For adaptive optimizers they are not:

- **coupled** (L2 in the loss, or torch's `Adam(weight_decay=λ)`): λw is added to the gradient *before*
  Adam divides by √v̂. A weight whose gradient has been large (large v̂) is barely decayed
  (effective rate ηλ/√v̂); a weight with small gradients is decayed hard. The regularization ends
  up strongest where the data says least, and its strength depends on the loss's scale.
- **decoupled** (AdamW, Loshchilov & Hutter 2019): θ ← θ − η(m̂/(√v̂ + ε) + λθ). Every weight shrinks by
  the same factor (1 − ηλ) per step whatever its gradient history, as weight decay intends; λ and η
  are also easier to tune separately. This is why AdamW, not Adam + L2, is the default for transformers
  and goodfit's recipes.

**Which parameters to decay.** Decay weights (conv kernels, linear matrices, embeddings), not
**biases** and not **normalization parameters** (BN/LN γ and β) — goodfit's `param_groups` puts them
in a group with weight_decay 0 (`optimizer.decay_norm_and_bias: false`). Biases are few and do not
drive overfitting. A weight followed by batch norm is scale-invariant — BN(c·Wx) = BN(Wx) — so decaying
it does not constrain the function at all (it only raises its effective LR), while decaying γ
directly shrinks the layer's output scale that the loss needs: the optimizer spends effort fighting
the decay and the last γ's before the head end up smaller than the data wants.

**L1 vs L2.** L1, λ‖w‖₁, has gradient λ·sign(w): a constant pull that does not fade as w → 0, so
weights whose data gradient is weaker than λ are driven to (and kept at) zero: **sparse** solutions,
implicit feature selection. L2's pull λw vanishes near 0: it shrinks everything proportionally and
leaves few exact zeros. (With subgradient SGD/Adam, L1 weights chatter around 0 at the scale of the
step, so "zero" means |w| below a small threshold; proximal methods give exact zeros.)

The lab measures all three on the digits with goodfit's recipes (digits-mlp / digits-cnn), the
`regularization: {l1:, l2:}` recipe keys (`WeightPenalty`, in the loss) and the optimizer's
`weight_decay` (in the update).
"""

LAM_COUPLED, LAM_DECOUPLED = 0.003, 0.3   # roughly matched median shrink of first-layer weights (see the table)
NEAR_ZERO = 1e-3                          # |w| below this counts as zero
BN_DECAY = 1.0


def build(overrides: list[str], seed: int, recipe: str = "digits-mlp"):
    from goodfit.recipe import load_recipe
    from goodfit.runner import build as build_parts, resolve

    return build_parts(resolve(load_recipe(recipe, ["train.threads=1", "train.early_stopping.patience=null",
                                                    "model.dropout=0", f"seed={seed}", *overrides])), progress=False)


def flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


# ------------------------------------------------------------------------------------------------ (a)
def coupled_vs_decoupled(ctx: LabContext, epochs: int, seeds) -> dict:
    from scipy.stats import spearmanr

    # the same update or not: 3 epochs from the same initialization and data order
    def final(opt: str, wd: float, l2: float):
        parts = build(["train.epochs=3", "schedule.name=constant", f"optimizer.name={opt}",
                       f"optimizer.weight_decay={wd}", f"regularization.l2={l2}"], 0)
        parts.trainer.fit()
        return flat(parts.trainer.model)

    lam = 0.05
    sgd_pen, sgd_wd = final("sgd", 0.0, lam), final("sgd", lam, 0.0)
    adam_pen, adam_wd, adamw = final("adam", 0.0, lam), final("adam", lam, 0.0), final("adamw", lam, 0.0)

    def rel(a, b) -> float:
        return float((a - b).norm() / b.norm())

    ctx.table(f"3 epochs from the same start, λ = {lam}: relative distance between final weights",
              ["pair", "‖θ₁ − θ₂‖ / ‖θ₂‖"],
              [["SGD + L2 penalty (l2 = λ)  vs  SGD(weight_decay = λ)", rel(sgd_pen, sgd_wd)],
               ["Adam + L2 penalty  vs  torch Adam(weight_decay = λ)", rel(adam_pen, adam_wd)],
               ["Adam + L2 penalty (coupled)  vs  AdamW(weight_decay = λ) (decoupled)", rel(adam_pen, adamw)]])
    ctx.check(rel(sgd_pen, sgd_wd) < 1e-4 and rel(adam_pen, adam_wd) < 1e-4 and rel(adam_pen, adamw) > 0.05,
              "an L2 penalty in the loss is SGD's weight_decay and Adam's weight_decay (both coupled; relative distance "
              "< 1e-4), but under Adam it is not AdamW's decoupled decay (trajectories differ by > 5 %)",
              f"{rel(sgd_pen, sgd_wd):.1e}, {rel(adam_pen, adam_wd):.1e}, {rel(adam_pen, adamw):.2f}")

    # who gets decayed: badly scaled inputs give the first-layer columns gradient histories 100× apart
    def first_layer(opt: str, wd: float, l2: float, seed: int):
        parts = build([f"train.epochs={epochs}", "schedule.name=constant", "optimizer.lr=0.003",
                       "data.perturb.feature_scale=100", f"optimizer.name={opt}", f"optimizer.weight_decay={wd}",
                       f"regularization.l2={l2}"], seed)
        parts.trainer.fit()
        w = parts.trainer.model[1].weight
        return w.detach().clone(), parts.trainer.optimizer.state[w]["exp_avg_sq"].clone(), parts.trainer

    out = {"grad": [], "coupled": [], "decoupled": []}
    rows = []
    for seed in seeds:
        w_ref, v_ref, trainer = first_layer("adam", 0.0, 0.0, seed)
        w_c, _, _ = first_layer("adam", 0.0, LAM_COUPLED, seed)
        w_d, _, _ = first_layer("adamw", LAM_DECOUPLED, 0.0, seed)
        grad = v_ref.sqrt().mean(0)                      # per input feature: RMS gradient history of its weights
        s_c = w_c.norm(dim=0) / w_ref.norm(dim=0)        # per input feature: shrink relative to no decay
        s_d = w_d.norm(dim=0) / w_ref.norm(dim=0)
        out["grad"].append(grad)
        out["coupled"].append(s_c)
        out["decoupled"].append(s_d)
        quart = torch.bucketize(grad, torch.quantile(grad, torch.tensor([0.25, 0.5, 0.75])))
        steps = epochs * len(trainer.train_loader)
        for name, s in (("Adam + L2 (coupled)", s_c), ("AdamW (decoupled)", s_d)):
            rows.append([seed, name, *[float(s[quart == q].median()) for q in range(4)],
                         float(spearmanr(grad.numpy(), s.numpy())[0]), float(s.quantile(0.9) / s.quantile(0.1))])
    ctx.table(f"first-layer weights, input features scaled ×1…×100: shrink factor ‖W[:, j]‖ / ‖W[:, j]‖(no decay) "
              f"after {epochs} epochs, by quartile of the feature's gradient history √v (Adam's state); "
              f"coupled λ = {LAM_COUPLED}, decoupled λ = {LAM_DECOUPLED}",
              ["seed", "decay", "Q1 (small ∇)", "Q2", "Q3", "Q4 (large ∇)", "Spearman ρ(∇, shrink)",
               "q90/q10 of shrink"], rows)
    theory = (1 - 0.003 * LAM_DECOUPLED) ** steps
    ctx.measure(f"AdamW: pure-decay shrink (1 − ηλ)^steps over {steps} steps", theory)
    coupled_rows, decoupled_rows = rows[0::2], rows[1::2]
    ctx.check(all(r[6] > 0.8 and r[2] < 0.5 * r[5] for r in coupled_rows),
              "Adam + L2 (coupled) decays by gradient history: the shrink factor rises with the feature's gradient scale "
              "(Spearman ρ > 0.8) and the small-gradient quartile shrinks ≥ 2× more than the large-gradient one, every seed",
              "; ".join(f"ρ {r[6]:.2f}, Q1 {r[2]:.2f} vs Q4 {r[5]:.2f}" for r in coupled_rows))
    ctx.check(all(r[7] < 1.5 for r in decoupled_rows),
              "AdamW (decoupled) shrinks uniformly whatever the gradient history: q90/q10 of the shrink factors < 1.5, "
              "every seed (coupled in brackets)",
              "; ".join(f"{d[7]:.2f} ({c[7]:.2f})" for c, d in zip(coupled_rows, decoupled_rows)))
    return out


# ------------------------------------------------------------------------------------------------ (b)
def norm_and_bias(ctx: LabContext, epochs: int, seeds) -> dict:
    from torch import nn

    # the groups build_optimizer makes for a recipe model with batch norm
    parts = build([], 0, recipe="digits-cnn")
    model, opt = parts.trainer.model, parts.trainer.optimizer
    names = {id(p): n for n, p in model.named_parameters()}
    owner = {id(p): m for m in model.modules() for p in m.parameters(recurse=False)}
    rows, right = [], True
    for g in opt.param_groups:
        ps = g["params"]
        norms = sum(isinstance(owner[id(p)], nn.modules.batchnorm._NormBase) for p in ps)
        biases = sum(names[id(p)].endswith("bias") for p in ps)
        rows.append([g["name"], g["weight_decay"], len(ps), sum(p.numel() for p in ps), norms, biases,
                     ", ".join(names[id(p)] for p in ps[:4]) + (" …" if len(ps) > 4 else "")])
        exempt = [isinstance(owner[id(p)], nn.modules.batchnorm._NormBase) or names[id(p)].endswith("bias") for p in ps]
        right &= all(exempt) and g["weight_decay"] == 0 if g["name"].startswith("no_decay") else not any(exempt)
    ctx.table("build_optimizer on the digits-cnn recipe (AdamW, weight_decay 0.01): parameter groups",
              ["group", "weight_decay", "tensors", "values", "BN parameters", "biases", "first names"], rows)
    ctx.check(right and len(opt.param_groups) == 2, "by default every BN weight/bias and every bias is in the no_decay "
              "group (weight_decay 0) and every conv/linear weight in the decay group")

    # scale invariance: what a BN after a weight undoes, and what it does not
    parts = build(["model.norm=batch", "train.epochs=1"], 0)
    parts.trainer.fit()
    net = parts.trainer.model.train()                    # batch statistics, as during training
    x = parts.data.x_train[:256]
    bns = [m for m in net if isinstance(m, nn.BatchNorm1d)]
    linears = [m for m in net if isinstance(m, nn.Linear)]
    with torch.no_grad():
        base = net(x)

        def scaled(params) -> float:
            saved = [p.detach().clone() for p in params]
            for p in params:
                p.mul_(0.5)
            out = net(x)
            for p, s in zip(params, saved):
                p.copy_(s)
            return float((out - base).abs().max() / base.abs().max())

        inv = {"first linear weight (before BN 1)": scaled([linears[0].weight]),
               "BN 1 γ and β (BN 2 follows)": scaled([bns[0].weight, bns[0].bias]),
               "last BN γ and β (the head follows)": scaled([bns[-1].weight, bns[-1].bias])}
    ctx.table("digits-mlp with batch norm, training-mode forward: max |Δ logit| / max |logit| after multiplying "
              "parameters by 0.5", ["parameters × 0.5", "relative change of the output"], [[k, v] for k, v in inv.items()])
    first, mid, last = inv.values()
    ctx.check(first < 1e-3 and mid < 1e-3 and last > 0.05, "a weight (or γ, β) followed by batch norm is scale-invariant "
              "(output change < 1e-3), so decay cannot regularize it; the last BN's γ, β set the output scale (> 5 %)",
              f"{first:.1e}, {mid:.1e}, {last:.2f}")

    # decaying γ: digits-mlp with batch norm, AdamW with a strong weight decay
    res = {}
    for flag in ("false", "true"):
        gammas, accs, losses = [], [], []
        for seed in seeds:
            parts = build(["model.norm=batch", f"train.epochs={epochs}", f"optimizer.weight_decay={BN_DECAY}",
                           f"optimizer.decay_norm_and_bias={flag}"], seed)
            state = parts.trainer.fit()
            gammas.append(torch.cat([m.weight.detach().abs() for m in parts.trainer.model
                                     if isinstance(m, nn.BatchNorm1d)]))
            accs.append(state.history[-1]["val_accuracy"])
            losses.append(state.history[-1]["train_loss"])
        res[flag] = {"gamma": torch.stack(gammas), "acc": float(np.mean(accs)), "loss": float(np.mean(losses)),
                     "gamma_mean": [float(g.mean()) for g in gammas]}
    ctx.table(f"digits-mlp + batch norm, AdamW weight_decay {BN_DECAY}, {epochs} epochs (mean over {len(seeds)} seeds)",
              ["decay_norm_and_bias", "mean |γ|", "min |γ|", "final train loss", "val accuracy"],
              [[f, float(r["gamma"].mean()), float(r["gamma"].min()), r["loss"], r["acc"]] for f, r in res.items()])
    drop = [1 - d / k for k, d in zip(res["false"]["gamma_mean"], res["true"]["gamma_mean"])]
    ctx.check(min(drop) > 0.15, "decaying the BN parameters shrinks γ: mean |γ| ≥ 15 % below the default run's, every "
              "seed (the loss has to fight the decay for the output scale)", ", ".join(f"−{d:.0%}" for d in drop))
    ctx.measure("val accuracy, BN decayed vs not (mean)", f"{res['true']['acc']:.3f} vs {res['false']['acc']:.3f}")
    ctx.measure("final train loss, BN decayed vs not (mean)", f"{res['true']['loss']:.4f} vs {res['false']['loss']:.4f}")
    return res


# ------------------------------------------------------------------------------------------------ (c)
def sparsity(ctx: LabContext, epochs: int, seeds, strengths) -> dict:
    frac = {"l1": [], "l2": []}
    acc = {"l1": [], "l2": []}
    for kind in ("l1", "l2"):
        for lam in strengths:
            f, a = [], []
            for seed in seeds:
                parts = build([f"train.epochs={epochs}", "optimizer.weight_decay=0", f"regularization.{kind}={lam}"], seed)
                state = parts.trainer.fit()
                w = torch.cat([p.detach().flatten() for p in parts.trainer.optimizer.param_groups[0]["params"]])
                f.append(float((w.abs() < NEAR_ZERO).float().mean()))
                a.append(state.history[-1]["val_accuracy"])
            frac[kind].append(f)
            acc[kind].append(float(np.mean(a)))
    rows = [[lam, float(np.mean(frac["l1"][i])), acc["l1"][i], float(np.mean(frac["l2"][i])), acc["l2"][i]]
            for i, lam in enumerate(strengths)]
    ctx.table(f"digits-mlp, AdamW without weight decay, {epochs} epochs: fraction of weights with |w| < {NEAR_ZERO:g} "
              f"(mean over {len(seeds)} seed(s))", ["λ", "L1: near-zero", "L1: val acc", "L2: near-zero", "L2: val acc"],
              rows)
    l1 = np.array(frac["l1"])                                      # [strengths, seeds]
    l2 = np.array(frac["l2"])
    ctx.check(bool(np.all(np.diff(l1, axis=0) > 0)), f"under L1 the near-zero fraction rises monotonically over the "
              f"{len(strengths)} strengths, every seed", " → ".join(f"{v:.0%}" for v in l1.mean(1)))
    ctx.check(bool(np.all(l1[1:] >= 3 * l2[1:]) and np.all(l2 < 0.2)),
              "L2 of the same strength leaves few near-zeros: < 20 %, and L1 has ≥ 3× as many at every λ > 0",
              " / ".join(f"{a:.0%} vs {b:.0%}" for a, b in zip(l1.mean(1)[1:], l2.mean(1)[1:])))
    return {"l1": l1.mean(1), "l2": l2.mean(1)}


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt

    torch.set_num_threads(1)
    epochs = 10 if ctx.quick else 20
    seeds = (0,) if ctx.quick else (0, 1)
    strengths = [0.0, 1e-4, 3e-4, 1e-3] if ctx.quick else [0.0, 1e-4, 3e-4, 1e-3, 3e-3]
    shrink = coupled_vs_decoupled(ctx, 20, seeds)  # the decay needs ~400 steps to separate the quartiles clearly
    bn = norm_and_bias(ctx, epochs, seeds)
    sparse = sparsity(ctx, epochs, seeds, strengths)

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 4.6))
    ax1.loglog(shrink["grad"][0].numpy(), shrink["coupled"][0].numpy(), "o", ms=3, color="tab:red",
               label=f"Adam + L2 (coupled), λ = {LAM_COUPLED}")
    ax1.loglog(shrink["grad"][0].numpy(), shrink["decoupled"][0].numpy(), "o", ms=3, color="tab:blue",
               label=f"AdamW (decoupled), λ = {LAM_DECOUPLED}")
    ax1.set_xlabel("gradient history √v of the feature's weights (no-decay run)")
    ax1.set_ylabel("shrink factor ‖W[:, j]‖ / no-decay")
    ax1.set_title("coupled L2 spares large-gradient weights")
    ax1.legend(fontsize=8)
    bins = np.linspace(0, 1.4, 36)
    ax2.hist(bn["false"]["gamma"].flatten().numpy(), bins, alpha=0.6, label="BN excluded from decay (default)")
    ax2.hist(bn["true"]["gamma"].flatten().numpy(), bins, alpha=0.6, label="decay_norm_and_bias: true")
    ax2.set_xlabel("|γ| of the BN layers")
    ax2.set_title(f"AdamW weight_decay {BN_DECAY}: decayed γ shrink")
    ax2.legend(fontsize=8)
    lams = strengths[1:]
    ax3.semilogx(lams, 100 * sparse["l1"][1:], "o-", label="L1 (regularization.l1)")
    ax3.semilogx(lams, 100 * sparse["l2"][1:], "s-", label="L2 (regularization.l2)")
    ax3.axhline(100 * sparse["l1"][0], color="0.5", ls=":", label="no penalty")
    ax3.set_xlabel("λ")
    ax3.set_ylabel(f"% of weights with |w| < {NEAR_ZERO:g}")
    ax3.set_title("L1 makes weights sparse, L2 does not")
    ax3.legend(fontsize=8)
    ctx.figure(fig, "weight_decay_l1_l2")


LAB = Lab(id="4.2", title="Weight decay and L1/L2 regularization",
          question="权重衰减与 L1/L2 正则化 — weight decay and L1/L2",
          answer=ANSWER, run=run, uses="optimizers (param_groups, build_optimizer), WeightPenalty")
