"""1.4.3 Dropout: inverted scaling makes eval mode the mean of train mode; MC dropout's variance."""
from __future__ import annotations

import numpy as np

from goodfit.labs import Lab, LabContext

ANSWER = r"""
**Dropout** (Srivastava et al. 2014) zeroes each unit of a layer independently with probability p
on every training step: h̃ = m ⊙ h with m_i ~ Bernoulli(1 − p). Each step trains a different
random sub-network, which shares weights with all the others, so no unit can rely on particular
other units being present (no co-adaptation); the trained net behaves like an average of
exponentially many thinned nets, and the noise regularizes.

**Train vs test.** At test time we want that average, deterministically. Its cheap approximation
keeps every unit and matches the *expected* input of the next layer: E[m_i·h_i] = (1 − p)·h_i.
- Original dropout: train with m ⊙ h, test with (1 − p)·h (scale the weights at test time).
- **Inverted dropout** (what torch and every modern framework do): train with m ⊙ h / (1 − p), test
  with h unchanged. Then E[train-mode output] = eval-mode output for the layer that follows, and
  the deployed model needs no rescaling and no knowledge of p. `model.eval()` turns dropout off.

The match is exact in expectation for what is *linear* in the dropped units (the next layer's
pre-activations); through later nonlinearities the eval output is the *weight-scaling
approximation* of the ensemble mean, close but not equal. Forgetting to rescale (either way) shifts
every activation by the factor (1 − p), which is why frameworks build the scaling in.

**MC dropout** (Gal & Ghahramani 2016): keep dropout *on* at test time (normalization layers stay
in eval mode), run T passes and use the mean of the predicted probabilities as the prediction and
their spread as an estimate of the model's (epistemic) uncertainty: p̄ = (1/T)Σ_t softmax(f_t(x)),
Var = (1/(T − 1))Σ_t (softmax(f_t(x)) − p̄)². goodfit: `goodfit.nn.dropout.mc_predict(model, x, T)`.

Variants: spatial (channel) dropout for conv feature maps (neighbouring pixels are correlated, so
dropping single pixels does little), alpha dropout for SELU nets, DropPath for residual branches.

**The lab** trains MLPs with dropout 0.5 on digits, compares the mean of many train-mode outputs with
the eval-mode output (with dropout right before the linear head the match is exact in expectation;
with dropout before hidden layers it is the weight-scaling approximation), and runs MC dropout on
the validation set.
"""

P = 0.5


def _passes(model, x, passes: int, chunk: int = 100):
    """Mean and standard error over `passes` train-mode forward passes, and the eval-mode output."""
    import torch

    model.eval()
    with torch.no_grad():
        expected = model(x)
        drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
        for m in drops:
            m.train()
        total, total_sq = torch.zeros_like(expected, dtype=torch.float64), torch.zeros_like(expected, dtype=torch.float64)
        for start in range(0, passes, chunk):
            k = min(chunk, passes - start)
            out = model(x.repeat(k, *[1] * (x.ndim - 1))).double().view(k, *expected.shape)
            total += out.sum(0)
            total_sq += (out ** 2).sum(0)
        for m in drops:
            m.eval()
    mean = total / passes
    se = ((total_sq / passes - mean ** 2).clamp_min(0) * passes / (passes - 1) / passes).sqrt()
    return mean, se, expected.double()


def run(ctx: LabContext) -> None:
    import shutil

    import matplotlib.pyplot as plt
    import torch

    import goodfit
    from goodfit.nn.dropout import mc_predict

    torch.set_num_threads(1)
    passes, mc_samples, seeds = (300, 50, [0]) if ctx.quick else (2000, 200, [0, 1])
    root = ctx.out / "runs"
    shutil.rmtree(root, ignore_errors=True)

    def train(depth, seed):
        return goodfit.run("digits-mlp", [f"model.depth={depth}", f"model.width={64 * 2 ** depth}", f"model.dropout={P}",
                                          "train.epochs=20", "data.perturb.subset=300", f"seed={seed}",
                                          "train.threads=1", "doctor.enabled=false"], out=root, progress=False)

    # ---------------------------------------------------------------- exact: dropout right before the linear head
    shallow = train(1, 0)
    x = shallow.data.x_val
    mean, se, expected = _passes(shallow.model, x, passes)
    z = ((mean - expected) / se).flatten().numpy()
    ctx.measure(f"dropout before the head: {x.shape[0]} val samples × 10 logits, {passes} train-mode passes; "
                "max |z| and mean z², z = (mean − eval)/SE", f"{np.abs(z).max():.2f}, {np.mean(z ** 2):.2f}")
    ctx.check(np.abs(z).max() < 5 and 0.8 < np.mean(z ** 2) < 1.25,
              "inverted dropout: the mean of many train-mode outputs equals the eval-mode output within statistical "
              "error (every logit within 5 standard errors, Bonferroni over all logits; mean z² ≈ 1)")
    head = [m for m in shallow.model.modules() if isinstance(m, torch.nn.Linear)][-1]
    bias = head.bias.detach().double()
    unscaled = (mean - bias) * (1 - P) + bias  # what training without the 1/(1 − p) scaling would average to
    z_bad = ((unscaled - expected) / (se * (1 - P))).flatten().numpy()
    ctx.check(np.median(np.abs(z_bad)) > 20,
              f"without the scaling (plain masks in training, no rescaling at test) the train-mode mean is off by the "
              f"factor 1 − p = {1 - P}: median |z| > 20", f"median |z| {np.median(np.abs(z_bad)):.0f}")

    # ---------------------------------------------------------------- approximate: dropout before nonlinearities
    deep = [train(2, s) for s in seeds]
    rel, agree, mc = [], [], []
    for r in deep:
        xv, yv = r.data.x_val, r.data.y_val
        mean_d, se_d, exp_d = _passes(r.model, xv, passes // 2)
        rel.append(((mean_d - exp_d).norm() / exp_d.norm()).item())
        agree.append((mean_d.argmax(1) == exp_d.argmax(1)).double().mean().item())
        probs, var = mc_predict(r.model, xv, samples=mc_samples)
        wrong = probs.argmax(1) != yv
        total_var = var.sum(1)
        mc.append({"acc": 1 - wrong.double().mean().item(), "eval_acc": (exp_d.argmax(1) == yv).double().mean().item(),
                   "var_wrong": total_var[wrong].mean().item(), "var_right": total_var[~wrong].mean().item(),
                   "n_wrong": int(wrong.sum()), "vars": total_var.numpy(), "wrong": wrong.numpy()})
    ctx.measure("2 hidden layers with dropout: ‖mean − eval‖/‖eval‖ of the logits (the weight-scaling "
                "approximation)", " ".join(f"{v:.3f}" for v in rel))
    ctx.check(all(0.005 < v < 0.3 for v in rel) and all(a > 0.95 for a in agree),
              "through nonlinearities eval mode only approximates the ensemble mean: a small but non-zero relative "
              "difference (0.5%–30%) with the same predicted class for > 95% of samples",
              f"agreement {' '.join(f'{a:.3f}' for a in agree)}")
    ctx.table("MC dropout on the validation split (T passes, BN-free MLP; variance summed over classes)",
              ["seed", "T", "MC accuracy", "eval accuracy", "errors", "mean Var | wrong", "mean Var | right"],
              [[s, mc_samples, m["acc"], m["eval_acc"], m["n_wrong"], m["var_wrong"], m["var_right"]]
               for s, m in zip(seeds, mc)])
    ctx.check(all(m["var_wrong"] > 2 * m["var_right"] for m in mc),
              "MC-dropout variance flags the model's mistakes: misclassified validation samples have more than twice "
              "the predictive variance of correctly classified ones (every seed)",
              " ".join(f"{m['var_wrong'] / m['var_right']:.1f}×" for m in mc))
    ctx.check(all(abs(m["acc"] - m["eval_acc"]) < 0.03 for m in mc),
              "the MC-averaged prediction is as accurate as the eval-mode prediction (within 0.03)")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.3))
    ax1.hist(np.clip(z, -6, 6), bins=50, density=True, alpha=0.6, label="inverted dropout")
    grid = np.linspace(-6, 6, 200)
    ax1.plot(grid, np.exp(-grid ** 2 / 2) / np.sqrt(2 * np.pi), "k", lw=1, label="N(0, 1)")
    ax1.set_xlabel("(mean of train-mode logits − eval logit) / SE")
    ax1.set_title(f"E[train mode] = eval mode ({passes} passes)")
    ax1.legend()
    m0 = mc[0]
    bins = np.linspace(0, max(m0["vars"].max(), 1e-6), 30)
    ax2.hist(m0["vars"][~m0["wrong"]], bins=bins, density=True, alpha=0.6, label="correct")
    ax2.hist(m0["vars"][m0["wrong"]], bins=bins, density=True, alpha=0.6, label="misclassified")
    ax2.set_xlabel("MC-dropout predictive variance (sum over classes)")
    ax2.set_title(f"uncertainty from {mc_samples} dropout passes")
    ax2.legend()
    fig.tight_layout()
    ctx.figure(fig, "dropout")


LAB = Lab(id="1.4.3", title="Dropout at train and test time",
          question="Dropout的核心原理是什么？训练阶段和测试阶段对Dropout的处理有何不同？为什么要这样处理？ — Dropout; its train vs "
                   "test handling and why.",
          answer=ANSWER, run=run, uses="dropout")
