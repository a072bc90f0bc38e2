"""1.5.3 BN at train vs test time: running statistics match the data's; eval output is batch-independent; the
"forgot eval()" bug on a batch of 1; test-time BN folded into the convolution."""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from goodfit.labs import Lab, LabContext

ANSWER = r"""
For a channel with values x over the mini-batch B (and over positions, for images):

- **Training**: μ_B = mean(x), σ²_B = var(x) (biased), x̂ = (x − μ_B)/√(σ²_B + ε), y = γx̂ + β.
  The statistics come from the batch itself, so each sample's output depends on its batch-mates
  (noise that regularizes a little), and gradients flow through μ_B and σ²_B. On the side, BN keeps
  running averages: μ̂ ← (1 − m)μ̂ + m·μ_B, σ̂² ← (1 − m)σ̂² + m·σ²_B·n/(n − 1) (m = 0.1 in torch).
- **Test**: y = γ(x − μ̂)/√(σ̂² + ε) + β with the stored μ̂, σ̂²: a fixed affine map per channel.
  The output of a sample no longer depends on what else is in the batch, works for a batch of 1, and
  is deterministic.

Why the difference: at test time there may be one sample, or a batch of unusual composition, and a
prediction must not depend on either; the population statistics the network was trained to expect
are what μ̂, σ̂² estimate (Ioffe & Szegedy 2015 use the population mean and unbiased variance).

**In practice.** `model.eval()` switches every BN (and dropout) to test behaviour; `model.train()`
switches back. Forgetting `eval()` is a classic bug: predictions then depend on the batch, a batch of
1 normalizes each image against itself (a fully-connected BN even refuses it: with one sample x − μ_B
= 0 and every input maps to β), and — even under `torch.no_grad()` — every forward pass overwrites the
running statistics. Deployment folds the test-time BN into the preceding convolution/linear layer:
W' = W·γ/√(σ̂² + ε), b' = (b − μ̂)·γ/√(σ̂² + ε) + β, so BN costs nothing at inference. When the EMA
lags (weights still moving fast at the end, or data changed), recompute exact population statistics
after training ("precise BN"; `goodfit.nn.adapt_batchnorm(model, batches, exact=True)`; on new-domain
data this is AdaBN).

**The lab.** goodfit's digits-cnn (16 → 16 → 32 channels, BN before ReLU) trained with `goodfit.run`;
every BN's running statistics against the exact mean/variance of its inputs over the training split
(forward hooks, eval mode); batch-(in)dependence; the forgotten `eval()`; BN folding.
"""

# measured (seeds 0-2, 4 epochs): worst channel |running mean − data mean| / data std 0.07-0.11; running/data
# variance 0.86-1.08; test accuracy 0.97-0.99 in eval mode, 0.09-0.10 (chance) predicting one sample at a time in
# train mode.
MEAN_TOL = 0.2      # |μ̂ − μ| ≤ MEAN_TOL · σ for every channel
VAR_TOL = 0.2       # |σ̂²/σ² − 1| ≤ VAR_TOL for every channel


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """conv followed by eval-mode bn as one convolution: W' = W·γ/√(σ̂² + ε), b' = (b − μ̂)·γ/√(σ̂² + ε) + β."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused


def _fold_model(model: nn.Sequential) -> nn.Sequential:
    layers = list(model)
    out, i = [], 0
    while i < len(layers):
        if isinstance(layers[i], nn.Conv2d) and i + 1 < len(layers) and isinstance(layers[i + 1], nn.BatchNorm2d):
            out.append(_fold(layers[i], layers[i + 1]))
            i += 2
        else:
            out.append(layers[i])
            i += 1
    return nn.Sequential(*out)


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt

    import goodfit
    from goodfit.nn import adapt_batchnorm

    torch.set_num_threads(1)
    epochs = 4 if ctx.quick else 10
    trained = goodfit.run("digits-cnn", ["model.width=16", "model.dropout=0", f"train.epochs={epochs}",
                                         "train.batch_size=32", "train.threads=1"],
                          out=ctx.out / "runs", progress=False)
    model, data = trained.model.eval(), trained.data
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]

    def accuracy(m, x=data.x_test, y=data.y_test) -> float:
        with torch.no_grad():
            return (m(x).argmax(1) == y).float().mean().item()

    # ------------------------------------------------------------ running statistics vs data statistics
    inputs = []
    hooks = [bn.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach())) for bn in bns]
    with torch.no_grad():
        model(data.x_train)
    for h in hooks:
        h.remove()
    rows, mean_err, var_ratio, scatter = [], [], [], []
    for i, (bn, x) in enumerate(zip(bns, inputs)):
        mu, var = x.mean((0, 2, 3)), x.var((0, 2, 3))
        e = ((bn.running_mean - mu).abs() / var.sqrt()).max().item()
        r = bn.running_var / var
        mean_err.append(e)
        var_ratio += [r.min().item(), r.max().item()]
        rows.append([f"BN {i + 1} ({bn.num_features} ch)", e, r.min().item(), r.max().item()])
        scatter.append((mu.numpy(), bn.running_mean.numpy(), var.numpy(), bn.running_var.numpy()))
    ctx.table(f"running statistics (EMA, momentum 0.1) vs the exact statistics of each BN's inputs over the "
              f"{len(data.x_train)} training digits (eval mode)",
              ["layer", "max |μ̂ − μ| / σ", "min σ̂²/σ²", "max σ̂²/σ²"], rows)
    ctx.check(max(mean_err) <= MEAN_TOL and max(abs(v - 1) for v in var_ratio) <= VAR_TOL,
              f"running statistics match the data statistics: every channel's running mean within {MEAN_TOL}·σ of "
              f"the data mean, running variance within ±{VAR_TOL:.0%} of the data variance",
              f"worst {max(mean_err):.3f}·σ, variance ratio {min(var_ratio):.3f}–{max(var_ratio):.3f}")
    precise = adapt_batchnorm(copy.deepcopy(model), data.x_train.split(256), exact=True)
    eval_acc = accuracy(model)
    ctx.measure("test accuracy, eval mode with the running (EMA) statistics", eval_acc)
    ctx.measure("test accuracy, eval mode with recomputed exact statistics (precise BN)", accuracy(precise))

    # ------------------------------------------------------------ eval: a sample's output ignores its batch-mates
    g = torch.Generator().manual_seed(0)
    probe = data.x_test[:10]
    spread = {"eval": [], "train": []}
    train_mode = copy.deepcopy(model).train()  # a copy: train-mode forwards overwrite running statistics
    with torch.no_grad():
        alone = model(probe)
        for mode, m in (("eval", model), ("train", train_mode)):
            outs = []
            for _ in range(8):
                mates = data.x_test[torch.randperm(len(data.x_test), generator=g)[:31]]
                outs.append(torch.stack([m(torch.cat([probe[i:i + 1], mates]))[0] for i in range(len(probe))]))
            outs = torch.stack(outs)  # (batches, samples, classes)
            spread[mode] = outs
    eval_diff = (spread["eval"] - alone).abs().max().item()
    train_diff = (spread["train"] - spread["train"].mean(0)).abs().max().item()
    ctx.measure("eval mode: max |logit in a random batch of 32 − logit alone|", eval_diff)
    ctx.measure("train mode: max |logit − its mean over 8 random batches of 32|", train_diff)
    ctx.check(eval_diff < 1e-4, "in eval mode a sample's output is independent of its batch-mates "
                                "(alone or in any batch: equal within 1e-4)")
    ctx.check(train_diff > 0.05, "in train mode it is not: the same sample's logits move with its batch-mates",
              f"up to {train_diff:.3f}")

    # ------------------------------------------------------------ the "forgot eval()" bug
    forgot = copy.deepcopy(model).train()
    before = [bn.running_mean.clone() for bn in forgot.modules() if isinstance(bn, nn.BatchNorm2d)]
    with torch.no_grad():  # no_grad does not stop BN from updating its running statistics
        one_by_one = torch.cat([forgot(x[None]) for x in data.x_test])
    forgot_acc = (one_by_one.argmax(1) == data.y_test).float().mean().item()
    after = [bn.running_mean for bn in forgot.modules() if isinstance(bn, nn.BatchNorm2d)]
    drift = max((a - b).abs().max().item() for a, b in zip(after, before))
    forgot.eval()
    ctx.table("predicting the test split one sample at a time", ["model mode", "test accuracy"],
              [["eval()", eval_acc], ["train() — eval() forgotten", forgot_acc],
               ["eval() again, after those train-mode passes", accuracy(forgot)]])
    ctx.check(forgot_acc < 0.3 and eval_acc > 0.9,
              "forgetting eval() on batches of 1 gives garbage: near-chance accuracy (< 0.3) from a model that "
              "scores > 0.9 in eval mode", f"{forgot_acc:.3f} vs {eval_acc:.3f}")
    ctx.check(drift > 1e-3, "and it silently rewrites the running statistics, even under torch.no_grad()",
              f"max |Δ running mean| {drift:.3g}")
    mlp_bn = nn.BatchNorm1d(8).train()
    try:
        mlp_bn(torch.randn(1, 8))
        refused = ""
    except ValueError as e:
        refused = str(e)
    x1 = torch.randn(1, 8)
    centred = x1 - x1.mean(0)
    ctx.measure("a fully-connected BN in train mode on a batch of 1", refused or "ran")
    ctx.check(bool(refused) and torch.equal(centred, torch.zeros_like(x1)),
              "a fully-connected BN cannot normalize a batch of 1: x − μ_B is exactly 0 (every input would map to β), "
              "so torch refuses it in train mode")

    # ------------------------------------------------------------ test-time BN folded into the convolution
    folded = _fold_model(model)
    with torch.no_grad():
        fold_diff = (folded(data.x_test) - model(data.x_test)).abs().max().item()
    ctx.measure("BN layers left after folding", sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules()))
    ctx.check(fold_diff < 1e-4 and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules()),
              "test-time BN is an affine map per channel: folded into the preceding convolution it gives the same "
              "logits (within 1e-4) with no BN layer left", f"max |Δ logit| {fold_diff:.2g}")

    # ------------------------------------------------------------ figure
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4.4))
    colors = plt.cm.viridis(np.linspace(0, 0.8, len(scatter)))
    for i, (mu, rm, var, rv) in enumerate(scatter):
        ax1.scatter(mu, rm, s=12, color=colors[i], label=f"BN {i + 1} mean")
        ax1.scatter(var, rv, s=12, marker="x", color=colors[i], label=f"BN {i + 1} var")
    lo = min(min(s[0].min(), s[2].min()) for s in scatter)
    hi = max(max(s[0].max(), s[2].max()) for s in scatter)
    ax1.plot([lo, hi], [lo, hi], "k:", lw=1)
    ax1.set_xlabel("exact statistic of the BN's inputs (training split)")
    ax1.set_ylabel("running statistic stored by BN")
    ax1.set_title("running statistics vs data statistics")
    ax1.legend(fontsize=7, ncol=2)
    for mode, color in (("train", "tab:red"), ("eval", "tab:green")):
        outs = spread[mode][:, :, :].numpy()
        for j in range(outs.shape[1]):
            cls = int(data.y_test[j])
            ax2.scatter(np.full(outs.shape[0], j) + (0.15 if mode == "eval" else -0.15), outs[:, j, cls], s=10,
                        color=color, label=f"{mode} mode" if j == 0 else None)
    ax2.set_xlabel("test sample")
    ax2.set_ylabel("logit of the true class in 8 random batches")
    ax2.set_title("the same sample among different batch-mates")
    ax2.legend()
    ax3.bar(["eval()", "train(), batch of 1", "eval() after"], [eval_acc, forgot_acc, accuracy(forgot)],
            color=["tab:green", "tab:red", "tab:orange"])
    ax3.axhline(0.1, color="k", ls=":", lw=1, label="chance")
    ax3.set_ylabel("test accuracy")
    ax3.set_title('the "forgot eval()" bug')
    ax3.legend()
    fig.tight_layout()
    ctx.figure(fig, "bn_train_vs_test")


LAB = Lab(id="1.5.3", title="BN at training vs test time",
          question="BN在训练阶段和测试阶段的计算逻辑有何不同？为什么需要这种差异？实际工程中如何实现测试阶段的BN？ — "
                   "BN train vs test computation; how test-time BN is implemented.",
          answer=ANSWER, run=run, uses="norms")
