"""1.5.4 BN vs LN vs IN vs GN: which axes each normalizes (asserted on a tensor) and accuracy across batch sizes."""
from __future__ import annotations

import numpy as np
import torch

from goodfit.labs import Lab, LabContext

ANSWER = r"""
All four compute y = γ·(x − μ)/√(σ² + ε) + β with a per-channel γ, β; they differ only in the set of
values S that μ and σ² are taken over. For a feature map x of shape (N, C, H, W):

| norm | μ, σ² over | statistics per | depends on the batch |
|---|---|---|---|
| **BatchNorm** | (N, H, W) | channel | yes: train-time batch statistics, running averages at test |
| **LayerNorm** | (C, H, W) | sample | no |
| **InstanceNorm** | (H, W) | sample × channel | no |
| **GroupNorm** (G groups) | (C/G, H, W) | sample × group | no (G = 1: LN, G = C: IN) |

Where each fits:
- **BN**: CNNs with batches of ~16 or more images per device: the most accurate there (ResNet-50 on
  ImageNet at batch 32, Wu & He 2018: top-1 error BN 23.6 %, GN 24.1 %, LN 25.3 %, IN 28.4 %); its batch
  noise regularizes a bit and its test-time form folds into the convolution for free. Weak for small or
  correlated batches, variable-length sequences and recurrent nets (1.5.5, 1.5.6).
- **LN**: sequence models (Transformers, RNNs): per token over the features, independent of batch size,
  padding and sequence length; the same computation in training and at test.
- **IN**: style transfer and image generation: it removes each image's per-channel contrast and mean
  ("style"). For recognition it throws information away — on small images it is the worst of the four.
- **GN**: detection/segmentation and other small-batch vision work (Wu & He 2018): batch-independent
  like LN, but keeps per-group structure; G = 32 is the usual choice (goodfit picks the largest divisor of
  C up to 32 with at least two channels per group).

**The lab.** (A) goodfit's `norm(kind, C, 2)` layers (what `model.norm` builds) on a random
(N, C, H, W) = (4, 6, 3, 3) tensor: which axes have mean 0 and variance 1 after each, and whether a
sample's output changes when its batch-mates do. (B) goodfit's digits-cnn (16 → 16 → 32 channels) with
`model.norm` = batch | layer | instance | group at `train.batch_size` 2…128, the same epochs, trained
through `goodfit.run`; test accuracy.
"""

KINDS = ("batch", "layer", "instance", "group")
NAMES = {"batch": "BN", "layer": "LN", "instance": "IN", "group": "GN"}
# the axes of (N, C, H, W) each norm's statistics are taken over; group: within a group of channels
AXES = {"batch": (0, 2, 3), "layer": (1, 2, 3), "instance": (2, 3), "group": "group"}
# (norm applied, norm whose sets are checked) -> are those sets unions of the applied norm's sets?
UNIONS = {(k, s): k == s or k == "instance" or (k, s) == ("group", "layer") for k in KINDS for s in KINDS}
IN_GAP = 0.15       # IN must trail the best other norm by at least this much at every batch size
BN_SLACK = 0.05     # BN at batch 2 must be within this of the best sample-wise norm (or better)
# measured (quick: 200 digits, 2 epochs, seeds 0-3): at batch 2 BN 0.70-0.81, LN 0.41-0.77, GN 0.53-0.68,
# IN 0.17-0.44; at batch 32 IN 0.10-0.22 vs 0.18-0.51 for the others (gap to the best ≥ 0.25).
# Full (600 digits, 3 epochs, 2 seeds): batch 2 BN 0.95, LN 0.96, GN 0.93, IN 0.59.


def _moments(y: torch.Tensor, kind: str, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance of y over `kind`'s axes, one value per statistic."""
    if kind == "group":
        n, c = y.shape[:2]
        g = y.reshape(n, groups, -1)
        return g.mean(-1), g.var(-1, unbiased=False)
    dims = AXES[kind]
    return y.mean(dims), y.var(dims, unbiased=False)


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt

    import goodfit
    from goodfit.models.layers import norm

    torch.set_num_threads(1)

    # ------------------------------------------------------------ (A) axes, on a tensor
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 6, 3, 3, generator=g) * torch.linspace(0.5, 3, 6).view(1, 6, 1, 1) + \
        torch.randn(4, 6, 1, 1, generator=g) * 2 + torch.randn(4, 1, 1, 1, generator=g)
    layers = {k: norm(k, 6, 2).train() for k in KINDS}
    groups = layers["group"].num_groups
    rows, matrix, independent = [], {}, {}
    outputs = {k: layers[k](x).detach() for k in KINDS}
    for k in KINDS:
        y = outputs[k]
        cells = []
        for stat in KINDS:
            mean, var = _moments(y, stat, groups)
            matrix[k, stat] = bool(mean.abs().max() < 1e-4 and (var - 1).abs().max() < 1e-2)
            cells.append("mean 0, var 1" if matrix[k, stat] else f"max |mean| {mean.abs().max():.2f}")
        rows.append([f"{NAMES[k]} ({type(layers[k]).__name__}"
                     + (f", {groups} groups" if k == "group" else "") + ")", *cells])
        mates = x.clone()
        mates[1:] = torch.randn(3, 6, 3, 3, generator=g) * 5 + 3  # new batch-mates for sample 0
        independent[k] = torch.allclose(layers[k](mates)[0].detach(), y[0], atol=1e-5)
    ctx.table("the output of each norm, checked over each norm's axes of (N, C, H, W) = (4, 6, 3, 3): "
              "BN (N,H,W) per channel · LN (C,H,W) per sample · IN (H,W) per sample×channel · GN (C/G,H,W) per "
              "sample×group", ["layer", *(f"over {NAMES[s]}'s axes" for s in KINDS)], rows)
    ctx.check(all(matrix[k, k] for k in KINDS),
              "each norm makes its own sets mean 0 / variance 1 (BN: N,H,W per channel; LN: C,H,W per sample; "
              f"IN: H,W per sample×channel; GN: {6 // groups} channels × H,W per sample×group)")
    ctx.check(all(matrix[k, s] == UNIONS[k, s] for k in KINDS for s in KINDS),
              "and exactly the sets that are unions of its own: IN's (the finest) normalize every coarser set, GN's "
              "normalize LN's, but BN and LN normalize nothing else — the axes really differ",
              "; ".join(f"{NAMES[k]}→{','.join(NAMES[s] for s in KINDS if matrix[k, s])}" for k in KINDS))
    ctx.table("does sample 0's output change when its 3 batch-mates are replaced?", ["layer", "unchanged"],
              [[NAMES[k], independent[k]] for k in KINDS])
    ctx.check(not independent["batch"] and all(independent[k] for k in ("layer", "instance", "group")),
              "only BN's output for a sample depends on the rest of the batch; LN, IN and GN are per-sample")

    # ------------------------------------------------------------ (B) accuracy across batch sizes
    if ctx.quick:
        batch_sizes, subset, epochs = [2, 32], 200, 2
    else:
        batch_sizes, subset, epochs = [2, 8, 32, 128], 600, 3
    acc = {}
    for k in KINDS:
        for b in batch_sizes:
            r = goodfit.run("digits-cnn", ["model.width=16", "model.dropout=0", f"model.norm={k}",
                                           f"train.batch_size={b}", f"train.epochs={epochs}", "schedule.warmup=0",
                                           f"data.perturb.subset={subset}", "train.threads=1"],
                            out=ctx.out / "runs", progress=False)
            acc[k, b] = r.test["accuracy"]
    ctx.table(f"test accuracy, digits-cnn on {subset} training digits, {epochs} epochs (AdamW, LR 0.003)",
              ["batch size", *(NAMES[k] for k in KINDS)], [[b, *(acc[k, b] for k in KINDS)] for b in batch_sizes])
    ctx.log("Every run has the same number of epochs, so larger batches take fewer steps (at the largest batch "
            "only a few): compare the norms within a row; across a row, step count and normalization change together.")
    gaps = [max(acc[k, b] for k in KINDS if k != "instance") - acc["instance", b] for b in batch_sizes]
    ctx.check(min(gaps) > IN_GAP, f"IN is the worst on digits at every batch size, by more than {IN_GAP}: it erases "
                                  "each image's per-channel mean and contrast, which here carry the class",
              f"smallest gap {min(gaps):.3f}")
    small = batch_sizes[0]
    best_samplewise = max(acc["layer", small], acc["group", small])
    ctx.check(acc["batch", small] >= best_samplewise - BN_SLACK,
              f"BN still works at batch size {small} in this CNN (within {BN_SLACK} of the best of LN/GN, or better): "
              f"each channel's statistics pool N·H·W values (2·64 in the first layer), not N — contrast the MLP of 1.5.5",
              f"BN {acc['batch', small]:.3f}, best of LN/GN {best_samplewise:.3f}")

    # ------------------------------------------------------------ figure
    fig = plt.figure(figsize=(16, 4.6))
    grid = fig.add_gridspec(1, 5, width_ratios=[1, 1, 1, 1, 2.6])
    n, c, hw = 4, 6, 9
    for i, k in enumerate(KINDS):
        ax = fig.add_subplot(grid[0, i])
        ids = np.zeros((n, c * hw))
        for s in range(n):
            for ch in range(c):
                key = {"batch": ch, "layer": s, "instance": s * c + ch,
                       "group": s * groups + ch // (c // groups)}[k]
                ids[s, ch * hw:(ch + 1) * hw] = key
        ax.imshow(ids % 20, aspect="auto", cmap="tab20", vmin=0, vmax=19, interpolation="nearest")
        for s in range(n):  # white borders between different sets (colours repeat after 20)
            for ch in range(1, c):
                if ids[s, ch * hw] != ids[s, ch * hw - 1]:
                    ax.plot([ch * hw - 0.5] * 2, [s - 0.5, s + 0.5], color="w", lw=1.5)
            if s:
                for ch in range(c):
                    if ids[s, ch * hw] != ids[s - 1, ch * hw]:
                        ax.plot([ch * hw - 0.5, (ch + 1) * hw - 0.5], [s - 0.5] * 2, color="w", lw=1.5)
        ax.set_xticks([hw * ch + hw / 2 - 0.5 for ch in range(c)], [str(ch) for ch in range(c)], fontsize=7)
        ax.set_yticks(range(n))
        ax.set_xlabel("channel (9 positions each)")
        if i == 0:
            ax.set_ylabel("sample")
        ax.set_title(f"{NAMES[k]}: one colour = one (μ, σ²)", fontsize=9)
    ax = fig.add_subplot(grid[0, 4])
    for k, color in zip(KINDS, ("tab:red", "tab:blue", "tab:gray", "tab:green")):
        ax.plot(batch_sizes, [acc[k, b] for b in batch_sizes], marker="o", color=color, label=NAMES[k])
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"digits-cnn, {epochs} epochs")
    ax.legend()
    fig.tight_layout()
    ctx.figure(fig, "bn_ln_in_gn")


LAB = Lab(id="1.5.4", title="BN vs LN vs IN vs GN",
          question="除了BN，常用的归一化方法还有LN、IN、GN，它们的核心区别是什么？各自适用于哪些场景？ — BN vs LN vs IN vs GN.",
          answer=ANSWER, run=run, uses="norms")
