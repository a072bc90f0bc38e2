"""1.5.6 Why LN suits sequence models and BN suits CNNs: on padded variable-length batches BN's statistics depend on
the padding and the batch-mates; LN's per-token output does not."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from goodfit.labs import Lab, LabContext

ANSWER = r"""
Take a batch of sequences x of shape (N, T, D) (N sequences, T positions after padding, D features).

- **BN** normalizes each feature d over all N·T positions of the batch: μ_d = mean over (n, t). With
  variable lengths the batch is padded, and the padding is counted too: with zero padding and a fraction
  p of padded positions, μ_d(padded) = (1 − p)·μ_d(real tokens) and the variance shrinks similarly, so
  every real token's output depends on how long the *longest* sequence of its batch is and on who its
  batch-mates are. Masking the padding out repairs the first problem, not the second. The running
  statistics average over training batches of varying padding, and at inference a sequence is often
  alone (batch 1) or generated one token at a time, where batch statistics do not exist. Recurrent nets
  make it worse: statistics differ per time step, so recurrent BN needs separate statistics for every
  step (Cooijmans et al. 2016) and fails on sequences longer than those seen in training.
- **LN** normalizes each token over its own D features: μ_{n,t} = mean_d x_{n,t,d}. No statistic crosses
  tokens, sequences or the batch, so the output for a token is the same at any batch size, padding
  or length, in training and at test — exactly what autoregressive decoding, variable lengths and small
  per-device batches of long sequences need. It is the norm of Transformers (pre-LN: x + f(LN(x))) and of
  normalized RNNs (Ba et al. 2016); RMSNorm drops the mean subtraction for speed.
- **BN in CNNs**: images have fixed size, no padding, and every position of a channel shares the same
  statistics (translation equivariance), so μ_c over (N, H, W) pools N·H·W comparable values; batches
  are large enough, BN's batch noise regularizes mildly, and at test time it folds into the convolution
  at no cost. LN over (C, H, W) forces all channels of an image to share one mean and scale, and trails
  BN in CNNs (1.5.4).

**The lab.** The 8×8 digits read as sequences: each row is a token of D = 8 pixel features, and each image
is cut to a random length of 2…8 rows (tokens), then zero-padded per batch. nn.BatchNorm1d(8) on
(N, D, T) against nn.LayerNorm(8) per token, both in training mode, over random batches of real digits.
"""

MATES = 5  # batch-mates of the probed sequence: few enough that the padded length varies from batch to batch


def _digit_rows(seed: int):
    """The training digits as sequences of rows (N, 8 tokens, 8 features), a random length 2…8 for each, and the
    generator that drew them (for the batches that follow)."""
    from goodfit.data import load_data
    from goodfit.recipe import load_recipe

    recipe = load_recipe("digits-mlp", [])
    data = load_data(recipe.data, recipe.task, 0)
    rows = data.x_train.reshape(-1, 8, 8)  # (image, row = token, pixel = feature)
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 9, (len(rows),), generator=g)
    return rows, lengths, g


def _pad(rows: torch.Tensor, lengths: torch.Tensor, idx: torch.Tensor, length: int | None = None):
    """Zero-pad sequences idx to `length` (default: the longest among them); returns (N, T, D) and a mask (N, T)."""
    t = int(lengths[idx].max()) if length is None else length
    x = torch.zeros(len(idx), t, rows.shape[-1])
    mask = torch.arange(t)[None, :] < lengths[idx][:, None]
    for i, j in enumerate(idx.tolist()):
        x[i, :lengths[j]] = rows[j, :lengths[j]]
    return x, mask


def _bn(x: torch.Tensor, bn: nn.BatchNorm1d) -> torch.Tensor:
    return bn(x.transpose(1, 2)).transpose(1, 2)  # BatchNorm1d takes (N, D, T): statistics over N and T


def _masked_bn(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """BN statistics over the real tokens only (what a careful sequence BN would do)."""
    real = x[mask]
    return (x - real.mean(0)) / torch.sqrt(real.var(0, unbiased=False) + eps)


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt

    torch.set_num_threads(1)
    rows, lengths, g = _digit_rows(0)
    bn, ln = nn.BatchNorm1d(8).train(), nn.LayerNorm(8)
    trials = 10 if ctx.quick else 40

    # ------------------------------------------------------------ BN's statistics follow the padding fraction
    idx = torch.randperm(len(rows), generator=g)[:16]
    fractions, ratio_err, curve = [], [], []
    x, mask = _pad(rows, lengths, idx)
    real_mean = x[mask].mean(0)
    for extra in range(0, 9):
        x, mask = _pad(rows, lengths, idx, int(lengths[idx].max()) + extra)
        p = 1 - mask.float().mean().item()
        batch_mean = x.reshape(-1, 8).mean(0)  # what BN's μ is over (N, T)
        ratio_err.append((batch_mean - (1 - p) * real_mean).abs().max().item())
        fractions.append(p)
        curve.append((p, batch_mean.abs().mean().item(), x.reshape(-1, 8).var(0).mean().item()))
    ctx.table("one batch of 16 digit-row sequences padded further and further: BN's per-feature mean and variance",
              ["padding fraction p", "mean |μ_d| (BN's batch mean)", "mean σ²_d (BN's batch variance)"],
              [[p, m, v] for p, m, v in curve])
    ctx.check(max(ratio_err) < 1e-5 and curve[-1][1] < curve[0][1],
              "BN's batch statistics depend on the padding: with zero padding μ_d = (1 − p)·μ_d(real tokens) "
              "exactly, shrinking as the padding fraction p grows", f"max |error| {max(ratio_err):.1g}")

    # ------------------------------------------------------------ a fixed sequence among random batch-mates
    target = int(torch.nonzero(lengths == 4)[0])  # a 4-token sequence
    alone = rows[target, :4]
    ln_alone = ln(alone).detach()
    spreads = {"BN": [], "BN, padding masked out": [], "LN": []}
    outs = {k: [] for k in spreads}
    max_len = []
    for _ in range(trials):
        mates = torch.randperm(len(rows), generator=g)[:MATES + 1]
        mates = mates[mates != target][:MATES]
        batch_idx = torch.cat([torch.tensor([target]), mates])
        x, mask = _pad(rows, lengths, batch_idx)
        max_len.append(x.shape[1])
        with torch.no_grad():
            outs["BN"].append(_bn(x, bn)[0, :4])
            outs["BN, padding masked out"].append(_masked_bn(x, mask)[0, :4])
            outs["LN"].append(ln(x)[0, :4])
    for k in outs:
        stacked = torch.stack(outs[k])
        spreads[k] = (stacked - stacked.mean(0)).abs().max().item()
    ln_vs_alone = max((o - ln_alone).abs().max().item() for o in outs["LN"])
    ctx.table(f"the same 4-token digit sequence in {trials} random padded batches of {MATES + 1} (longest sequence "
              f"{min(max_len)}–{max(max_len)} tokens): how much its normalized tokens move",
              ["normalization", "max |output − its mean over batches|"], [[k, v] for k, v in spreads.items()])
    ctx.measure("LN: max |output in a padded batch − LN of the sequence alone, unpadded|", ln_vs_alone)
    ctx.check(spreads["BN"] > 0.05, "BN's output for a token depends on its batch-mates and the padding",
              f"moves by up to {spreads['BN']:.3f}")
    ctx.check(spreads["BN, padding masked out"] > 0.05,
              "masking the padding out of BN's statistics does not help with the batch-mates",
              f"still moves by up to {spreads['BN, padding masked out']:.3f}")
    ctx.check(spreads["LN"] < 1e-5 and ln_vs_alone < 1e-5,
              "LN's per-token output does not: identical in every batch, with any padding, and equal to LN of the "
              "sequence alone (within 1e-5)")

    # ------------------------------------------------------------ running statistics learn the padding
    bn_run = nn.BatchNorm1d(8, momentum=None).train()  # cumulative average: the padding's share is not noise
    real_tokens = []
    with torch.no_grad():
        for _ in range(trials):
            x, mask = _pad(rows, lengths, torch.randperm(len(rows), generator=g)[:16])
            _bn(x, bn_run)
            real_tokens.append(x[mask])
    true_mean = torch.cat(real_tokens).mean(0)
    shrink = (bn_run.running_mean.norm() / true_mean.norm()).item()
    ctx.measure("‖BN running mean‖ / ‖mean of the real tokens‖ after training-mode passes over padded batches", shrink)
    ctx.check(shrink < 0.85, "BN's running statistics absorb the padding: its running mean is pulled towards the "
                             "padding value 0, so at test time (one unpadded sequence) it normalizes with the wrong "
                             "statistics", f"ratio {shrink:.3f}")

    # ------------------------------------------------------------ figure
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.4))
    ps = np.array([c[0] for c in curve])
    ax1.plot(ps, [c[1] for c in curve], marker="o", label="mean |μ_d| (BN's batch mean)")
    ax1.plot(ps, [c[2] for c in curve], marker="s", label="mean σ²_d (BN's batch variance)")
    ax1.plot(ps, (1 - ps) * curve[0][1] / (1 - ps[0]), "k:", label="(1 − p) × real-token mean")
    ax1.set_xlabel("padding fraction p of the batch")
    ax1.set_title("BN's statistics on a padded batch of 16 digit-row sequences")
    ax1.legend(fontsize=8)
    feat = int(alone.var(0).argmax())  # the pixel column that varies most along this digit's rows
    for k, color in zip(outs, ("tab:red", "tab:orange", "tab:blue")):
        stacked = torch.stack(outs[k])[:, :, feat].numpy()
        for t in range(4):
            ax2.scatter(np.full(len(stacked), t) + {"BN": -0.2, "LN": 0.2}.get(k, 0.0), stacked[:, t], s=10,
                        color=color, label=k if t == 0 else None)
    ax2.set_xticks(range(4), [f"token {t + 1}" for t in range(4)])
    ax2.set_ylabel(f"normalized feature {feat} (pixel column)")
    ax2.set_title(f"one 4-token sequence in {trials} random padded batches of {MATES + 1}")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    ctx.figure(fig, "bn_vs_ln_padding")


LAB = Lab(id="1.5.6", title="LN for sequences, BN for CNNs",
          question="Layer Normalization（LN）为什么更适合RNN、Transformer等序列模型？而BN更适合CNN？ — "
                   "Why LN suits sequence models and BN suits CNNs.",
          answer=ANSWER, run=run, uses="norms")
