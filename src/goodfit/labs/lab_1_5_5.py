"""1.5.5 Batch size and BN: BN collapses at tiny batches while GN does not; SyncBN across 2 processes equals BN on
the combined batch; BNNeck's feature/classifier split."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import torch
from torch import nn

from goodfit.labs import Lab, LabContext

ANSWER = r"""
BN normalizes each channel with the mean μ_B and variance σ²_B of the current mini-batch, estimated from
m = N·(H·W) values (N samples, H·W positions; m = N for a fully-connected layer). Small batches hurt in
three ways:

- **Noisy statistics.** μ_B has standard error σ/√m and σ²_B is just as unreliable, so every sample's
  output jitters with its batch-mates. A little noise regularizes; at m = 2 it destroys information:
  with two samples x̂ = (x − μ_B)/σ_B is exactly ±1 for every feature — only the *sign* of the
  difference between the two samples survives.
- **Train/test mismatch.** Training normalizes by the noisy μ_B, σ²_B, test time by their running
  averages. The later layers learn to work with the training-time activations (at N = 2: patterns of
  ±1) and meet a different distribution at test time (smooth values); the smaller the batch, the
  larger the gap.
- **Gradient coupling.** ∂ℓ/∂x goes through μ_B and σ²_B, so the gradient of one sample depends on the
  others; with m tiny that term dominates.

Gradient accumulation does **not** help (BN still sees the micro-batch). Remedies:

- **Sample-wise normalization**: GroupNorm (Wu & He 2018: channels in groups, statistics per sample and
  group), LayerNorm, InstanceNorm — the same function at any batch size, no running statistics.
- **SyncBN**: compute μ, σ² over the batch of *all* devices (one all-reduce of Σ1, Σx, Σx² per layer in the
  forward pass and of Σdy, Σdy·x̂ in the backward pass), so 8 GPUs × 2 images normalize like one batch of 16.
  torch's `nn.SyncBatchNorm` refuses CPU tensors; `goodfit.nn.SyncBatchNorm` (a subclass) also
  synchronizes on CPU/gloo and `goodfit.nn.convert_sync_batchnorm(model)` swaps it in.
- Batch Renormalization (Ioffe 2017: correct batch statistics towards the running ones), freezing BN
  (fine-tuning with the pretrained running statistics in eval mode), or simply a larger batch.

**BNNeck** (Luo et al. 2019, person re-ID) is not a small-batch fix but a placement trick for BN when one
feature must serve two losses: the metric loss (triplet) on f_t, the feature *before* a BN, and the
cross-entropy on a bias-free classifier applied to f_i = BN(f_t) with β frozen at 0. The triplet loss
wants free Euclidean structure, the softmax wants classes separable by hyperplanes through the origin;
BN centres and rescales f_i so each loss acts on its own copy. `goodfit.nn.BNNeck` returns (f_t, logits);
`features(x, "post")` gives f_i for retrieval.

**The lab.** (A) A digits MLP (64 → 64 → 64 → 10) with BN or GN (8 groups) after each hidden linear layer,
SGD (momentum 0.9) with the LR scaled linearly with the batch (0.1·B/32, Goyal et al. 2017), the same
epochs for every B, validation accuracy in eval mode. (B) The same MLP, converted with
`convert_sync_batchnorm`, trained one step in 2 spawned processes (gloo, CPU) holding 2 samples each,
against BN on the combined 4. (C) A BNNeck trained with batch-hard triplet + cross-entropy on digits.
"""

# measured, val accuracy per seed (seeds 0-5; 600 samples, 1 epoch): BN 0.44-0.60 at B=2, 0.84-0.91 at B=32;
# GN 0.81-0.92 at B=2, 0.74-0.90 at B=32 (B=2 minus B=32 between -0.07 and +0.07 per seed).
# Full data, 3 epochs, seeds 0-2: BN 0.59 at B=2 vs 0.96 at B=32; GN 0.94-0.96 at B=2 vs 0.93-0.96 at B=32.
BN_DROP = 0.15      # BN at the smallest batch must lose at least this much against B = 32 (mean over seeds)
GN_SLACK = 0.08     # GN at the smallest batch must not lose more than this against B = 32 (mean over seeds)
SYNC_ATOL = 1e-5


def _mlp(norm: str, width: int = 64) -> nn.Module:
    def make():
        return nn.BatchNorm1d(width) if norm == "batch" else nn.GroupNorm(8, width)

    return nn.Sequential(nn.Linear(64, width), make(), nn.ReLU(), nn.Linear(width, width), make(), nn.ReLU(),
                         nn.Linear(width, 10))


def _digits():
    from goodfit.data import load_data
    from goodfit.recipe import load_recipe

    recipe = load_recipe("digits-mlp", [])
    data = load_data(recipe.data, recipe.task, 0)
    return data.x_train.flatten(1), data.y_train, data.x_val.flatten(1), data.y_val


def _train_mlp(norm, batch, epochs, seed, x, y, xv, yv) -> float:
    from goodfit.data import TensorLoader

    torch.manual_seed(seed)
    model = _mlp(norm)
    opt = torch.optim.SGD(model.parameters(), lr=0.1 * batch / 32, momentum=0.9)
    loader = TensorLoader(x, y, batch, seed=seed, drop_last=True)  # a last batch of 1 would crash BN
    for epoch in range(epochs):
        model.train()
        for xb, yb in loader.epoch(epoch):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return (model(xv).argmax(1) == yv).float().mean().item()


# ---------------------------------------------------------------------------------------------------- SyncBN worker
def _sync_worker(rank: int, world: int, port: int, out: str) -> None:
    """One SGD step of the converted MLP on this rank's 2 samples; writes the differences to BN on all 4."""
    import torch.distributed as dist

    from goodfit.nn import convert_sync_batchnorm

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        reference = _mlp("batch")
        synced = convert_sync_batchnorm(_mlp("batch"))
        synced.load_state_dict(reference.state_dict())
        local = _mlp("batch")  # plain BN on this rank's share: what you get without synchronization
        local.load_state_dict(reference.state_dict())
        g = torch.Generator().manual_seed(1)
        x, y = torch.randn(2 * world, 64, generator=g), torch.randint(0, 10, (2 * world,), generator=g)
        part = slice(2 * rank, 2 * rank + 2)
        outs = {}
        for name, model, xb, yb in (("sync", synced, x[part], y[part]), ("ref", reference, x, y),
                                    ("local", local, x[part], y[part])):
            logits = model(xb)
            nn.functional.cross_entropy(logits, yb, reduction="sum").backward()  # sums add up across processes
            outs[name] = logits.detach()
        grads = torch.cat([p.grad.flatten() for p in synced.parameters()])
        dist.all_reduce(grads)
        ref_grads = torch.cat([p.grad.flatten() for p in reference.parameters()])
        local_grads = torch.cat([p.grad.flatten() for p in local.parameters()]) * world

        def stats(m):
            return torch.cat([b.flatten().float() for b in m.buffers()])

        result = {
            "output": (outs["sync"] - outs["ref"][part]).abs().max().item(),
            "grad": (grads - ref_grads).abs().max().item(),
            "running": (stats(synced) - stats(reference)).abs().max().item(),
            "local_output": (outs["local"] - outs["ref"][part]).abs().max().item(),
            "local_grad": (local_grads - ref_grads).abs().max().item(),
        }
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def _sync_check(out: Path) -> list[dict]:
    """Start 2 processes (fork on Linux: no second torch import, the check takes well under a second)."""
    import sys

    import torch.multiprocessing as mp

    out.mkdir(parents=True, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    method = "fork" if sys.platform == "linux" else "spawn"
    mp.start_processes(_sync_worker, args=(2, port, str(out)), nprocs=2, join=True, start_method=method)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


# ---------------------------------------------------------------------------------------------------- BNNeck
def _bnneck(x, y, xv, yv, epochs: int) -> dict:
    import goodfit.losses as gl
    from goodfit.data import TensorLoader
    from goodfit.nn import BNNeck

    torch.manual_seed(0)
    neck = BNNeck(nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 32)), nn.Linear(32, 10, bias=False))
    opt = torch.optim.Adam([p for p in neck.parameters() if p.requires_grad], lr=3e-3)
    loader = TensorLoader(x, y, 64, seed=0, drop_last=True)
    for epoch in range(epochs):
        neck.train()
        for xb, yb in loader.epoch(epoch):
            feature, logits = neck(xb)
            loss = gl.batch_hard_triplet(feature, yb, margin=0.3) + nn.functional.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    neck.eval()
    result = {"bias_zero": bool(torch.equal(neck.neck.bias, torch.zeros_like(neck.neck.bias)))}
    with torch.no_grad():
        result["accuracy"] = (neck(xv).logits.argmax(1) == yv).float().mean().item()
        for which in ("pre", "post"):
            ft, fv = neck.features(x, which), neck.features(xv, which)
            mean = ft.mean(0)
            result[which] = {
                "feature": ft, "mean": mean, "std": ft.std(0),
                # how far the cloud sits from the origin: ‖mean‖ / average ‖f‖ (0 = centred)
                "offset": (mean.norm() / ft.norm(dim=1).mean()).item(),
                "nn_euclid": (y[torch.cdist(fv, ft).argmin(1)] == yv).float().mean().item(),
                "nn_cosine": (y[(nn.functional.normalize(fv, dim=1) @ nn.functional.normalize(ft, dim=1).T)
                                .argmax(1)] == yv).float().mean().item(),
            }
    return result


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt

    torch.set_num_threads(1)
    x, y, xv, yv = _digits()
    if ctx.quick:
        batches, epochs, seeds, n = [2, 32], 1, [0, 1], 600
    else:
        batches, epochs, seeds, n = [2, 4, 8, 16, 32, 64], 3, [0, 1], len(x)
    xs, ys = x[:n], y[:n]

    # ------------------------------------------------------------ (A) BN vs GN across batch sizes
    acc = {norm: {b: float(np.mean([_train_mlp(norm, b, epochs, s, xs, ys, xv, yv) for s in seeds])) for b in batches}
           for norm in ("batch", "group")}
    ctx.table(f"val accuracy (eval mode) after {epochs} epochs on {n} digits, mean of {len(seeds)} seed(s); "
              "SGD, LR = 0.1·B/32", ["batch size", "BN", "GN (8 groups)"],
              [[b, acc["batch"][b], acc["group"][b]] for b in batches])
    small = batches[0]
    bn_drop = acc["batch"][32] - acc["batch"][small]
    gn_drop = acc["group"][32] - acc["group"][small]
    ctx.measure(f"BN: accuracy at B=32 minus at B={small}", bn_drop)
    ctx.measure(f"GN: accuracy at B=32 minus at B={small}", gn_drop)
    ctx.check(bn_drop > BN_DROP, f"BN degrades at batch size {small}: at least {BN_DROP} val accuracy below B=32",
              f"{acc['batch'][small]:.3f} vs {acc['batch'][32]:.3f}")
    ctx.check(gn_drop < GN_SLACK, f"GN does not: at batch size {small} within {GN_SLACK} of B=32 (or better)",
              f"{acc['group'][small]:.3f} vs {acc['group'][32]:.3f}")
    ctx.check(acc["group"][small] > acc["batch"][small] + BN_DROP,
              f"at batch size {small} GN beats BN by more than {BN_DROP}")

    # ------------------------------------------------------------ (B) SyncBN across 2 CPU processes
    diffs = _sync_check(ctx.out / "syncbn")
    worst = {k: max(d[k] for d in diffs) for k in diffs[0]}
    ctx.table("SyncBN in 2 processes × 2 samples vs BN on the 4 together: max |difference| over both processes",
              ["quantity", "goodfit SyncBatchNorm", "plain BN per process"],
              [["outputs", worst["output"], worst["local_output"]],
               ["parameter gradients (summed over processes)", worst["grad"], worst["local_grad"]],
               ["running mean/var (after the step)", worst["running"], "-"]])
    ctx.check(max(worst["output"], worst["grad"], worst["running"]) < SYNC_ATOL,
              f"SyncBN across 2 gloo processes equals BN on the combined batch (outputs, summed gradients, "
              f"running statistics within {SYNC_ATOL})")
    ctx.check(worst["local_output"] > 100 * SYNC_ATOL,
              "without synchronization each process's BN computes something else (a 2-sample BN)",
              f"max |Δ output| {worst['local_output']:.3g}")

    # ------------------------------------------------------------ (C) BNNeck
    neck = _bnneck(x, y, xv, yv, epochs=2 if ctx.quick else 4)
    pre, post = neck["pre"], neck["post"]
    ctx.table("BNNeck on digits (triplet on f_t, cross-entropy on classifier(BN(f_t))): training-set features",
              ["feature", "‖mean‖ / mean ‖f‖", "mean per-dim std", "1-NN val acc (Euclidean)", "1-NN val acc (cosine)"],
              [["f_t (pre-BN)", pre["offset"], pre["std"].mean().item(), pre["nn_euclid"], pre["nn_cosine"]],
               ["f_i (post-BN)", post["offset"], post["std"].mean().item(), post["nn_euclid"], post["nn_cosine"]]])
    ctx.measure("BNNeck classifier val accuracy", neck["accuracy"])
    ctx.check(neck["bias_zero"], "BNNeck's BN shift β stays exactly 0 through training (frozen)")
    ctx.check(post["offset"] < 0.5 * pre["offset"],
              "the BN re-centres the feature: f_i sits at least 2× closer to the origin than f_t (‖mean‖/mean ‖f‖)",
              f"{post['offset']:.3f} vs {pre['offset']:.3f}")
    ctx.check(min(pre["nn_euclid"], post["nn_cosine"], neck["accuracy"]) > 0.9,
              "both heads work: 1-NN retrieval with f_t (Euclidean) and f_i (cosine), and the classifier, all > 0.9")

    # ------------------------------------------------------------ figure
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4.4))
    for norm, label, color in (("batch", "BatchNorm", "tab:red"), ("group", "GroupNorm (8 groups)", "tab:blue")):
        ax1.plot(batches, [acc[norm][b] for b in batches], marker="o", color=color, label=label)
    ax1.set_xscale("log", base=2)
    ax1.set_xlabel("batch size (LR ∝ batch size)")
    ax1.set_ylabel("val accuracy (eval mode)")
    ax1.set_title("digits MLP: BN vs GN across batch sizes")
    ax1.legend()
    labels = ["outputs", "gradients", "running stats"]
    ax2.bar(np.arange(3) - 0.2, [max(worst[k], 1e-12) for k in ("output", "grad", "running")], 0.4,
            label="goodfit SyncBatchNorm", color="tab:green")
    ax2.bar(np.arange(2) + 0.2, [worst["local_output"], worst["local_grad"]], 0.4, label="plain BN per process",
            color="tab:gray")
    ax2.set_yscale("log")
    ax2.set_xticks(range(3), labels)
    ax2.set_ylabel("max |difference| to BN on the combined batch")
    ax2.set_title("2 processes × 2 samples (gloo, CPU)")
    ax2.legend(fontsize=8)
    dims = np.arange(len(pre["mean"]))
    for feat, label, color, shift in ((pre, "f_t (pre-BN): triplet loss", "tab:orange", -0.2),
                                      (post, "f_i (post-BN): classifier", "tab:purple", 0.2)):
        ax3.bar(dims + shift, (feat["mean"].abs() / feat["std"]).numpy(), 0.4, color=color, label=label)
    ax3.set_xlabel("feature dimension")
    ax3.set_ylabel("|mean| / std over the training set")
    ax3.set_title("BNNeck: the BN centres the classifier's feature")
    ax3.legend(fontsize=8)
    fig.tight_layout()
    ctx.figure(fig, "batch_size_and_bn")


LAB = Lab(id="1.5.5", title="Batch size and BN; SyncBN, GN, BNNeck",
          question="批量大小（Batch Size）对BN的效果有什么影响？小批量训练时使用BN会出现什么问题？有哪些改进方案（如SyncBN、BNNeck）？ — "
                   "Batch size and BN; small-batch problems; SyncBN, BNNeck.",
          answer=ANSWER, run=run, uses="SyncBN, GN, BNNeck")
