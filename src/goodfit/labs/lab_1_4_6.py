"""1.4.6 Is BN a regularizer: the train/val gap with and without BN, and BN's batch noise (a sample's output moves
with its batch-mates in train mode, not in eval mode)."""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from goodfit.labs import Lab, LabContext

ANSWER = r"""
BN was designed to speed up optimization, not to regularize, but it has a side effect that acts like
one: in training, sample i is normalized with the statistics of its *random* mini-batch,

  x̂ᵢ = (xᵢ − μ_B)/σ_B,  μ_B = μ + O(σ/√m),  σ_B = σ·(1 + O(1/√m))   (m values per channel),

so each forward pass adds a random shift and a random scale to every activation — noise that depends on
which samples share the batch and shrinks as 1/√m. Like dropout's noise, it keeps the network from
relying on exact activation values, and it vanishes at test time (eval mode uses fixed running
statistics). Ioffe & Szegedy (2015) could drop dropout from BN-Inception; Luo et al. (2019) decompose BN
into normalization by population statistics plus an implicit penalty on γ ("gamma decay") that comes
from the noise of the batch statistics.

So yes, a weak and batch-size-dependent one:
- the effect fades as the batch grows (less noise) and disappears with a frozen BN (eval-mode
  fine-tuning) or with sample-wise norms (LN/GN have no batch noise, 1.5.8);
- it is entangled with BN's optimization effects — a smoother loss surface that tolerates larger learning
  rates (Santurkar et al. 2018) and, with weight decay, a growing effective learning rate for the
  scale-invariant weights — so a smaller gap with BN is not all regularization;
- it does not replace the real regularizers when a model overfits badly (more data, augmentation,
  weight decay, dropout, early stopping).

**The lab.** (A) goodfit's digits-cnn (32 → 32 → 64 channels) with `norm` = batch or none, trained from
the same initial seed on 300 digits with Adam (LR 1e-3, no weight decay, no dropout, batch 32) for the
same number of steps; train and validation loss in eval mode; several seeds. In full mode the same for
goodfit's digits-mlp. (B) The BN CNN's logits for the same validation digits placed among random
batch-mates from the training split, batch sizes 4…256, in train and in eval mode.
"""

# measured: digits-cnn, 300 digits, 150 steps, seeds 0-3: val-loss gap (val − train, eval mode) 0.23-0.25 with BN,
# 0.29-0.32 without; 300 steps, seeds 0-5: 0.20-0.22 with BN, 0.30-0.42 without. digits-mlp, 600 steps, seeds 0-5:
# 0.28-0.37 with BN, 0.35-0.43 without, accuracy gap 0.106 vs 0.107 (mean).
GAP_MARGIN = 0.03   # the mean val-loss gap with BN must be below the one without by at least this much
BATCHES = (4, 16, 64, 256)


def _train(name: str, norm: str, seed: int, steps: int, x, y, data):
    from goodfit.data import TensorLoader
    from goodfit.models import build_model
    from goodfit.recipe import load_recipe

    recipe = load_recipe(name, ["model.dropout=0", "model.width=32", f"model.norm={norm}"])
    torch.manual_seed(seed)
    model = build_model(recipe.model, data.input_shape, data.num_outputs)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = TensorLoader(x, y, 32, seed=seed, drop_last=True)
    step, epoch = 0, 0
    while step < steps:
        model.train()
        for xb, yb in loader.epoch(epoch):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
            step += 1
            if step == steps:
                break
        epoch += 1
    return model.eval()


def _fit_gap(model, x, y, xv, yv) -> dict:
    with torch.no_grad():
        out, out_v = model(x), model(xv)
        return {"train_loss": F.cross_entropy(out, y).item(), "val_loss": F.cross_entropy(out_v, yv).item(),
                "train_acc": (out.argmax(1) == y).float().mean().item(),
                "val_acc": (out_v.argmax(1) == yv).float().mean().item()}


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt

    from goodfit.data import load_data
    from goodfit.recipe import load_recipe

    torch.set_num_threads(1)
    recipe = load_recipe("digits-cnn", [])
    data = load_data(recipe.data, recipe.task, 0)
    n = 300
    x, y, xv, yv = data.x_train[:n], data.y_train[:n], data.x_val, data.y_val
    seeds = [0, 1] if ctx.quick else [0, 1, 2, 3]
    steps = 150 if ctx.quick else 300
    models = [("digits-cnn", steps)] + ([] if ctx.quick else [("digits-mlp", 2 * steps)])
    probes_n, draws = (4, 12) if ctx.quick else (10, 20)

    # ------------------------------------------------------------ (A) the gap with and without BN
    results, rows, bn_models = {}, [], {}
    for name, s in models:
        for norm in ("batch", "none"):
            results[name, norm] = []
            for seed in seeds:
                model = _train(name, norm, seed, s, x, y, data)
                if name == "digits-cnn" and norm == "batch":
                    bn_models[seed] = model
                r = _fit_gap(model, x, y, xv, yv)
                results[name, norm].append(r)
            rs = results[name, norm]
            rows.append([name, "BN" if norm == "batch" else "none", s,
                         np.mean([r["train_loss"] for r in rs]), np.mean([r["val_loss"] for r in rs]),
                         np.mean([r["val_loss"] - r["train_loss"] for r in rs]),
                         np.mean([r["train_acc"] for r in rs]), np.mean([r["val_acc"] for r in rs]),
                         np.mean([r["train_acc"] - r["val_acc"] for r in rs])])
    ctx.table(f"{n} training digits, Adam 1e-3, batch 32, no weight decay or dropout; eval-mode losses; mean of "
              f"{len(seeds)} seeds", ["model", "norm", "steps", "train loss", "val loss", "val − train loss",
                                      "train acc", "val acc", "train − val acc"], rows)

    def gaps(name, norm):
        return [r["val_loss"] - r["train_loss"] for r in results[name, norm]]

    bn_gap, plain_gap = gaps("digits-cnn", "batch"), gaps("digits-cnn", "none")
    fits_better = np.mean([r["train_loss"] for r in results["digits-cnn", "batch"]]) < \
        np.mean([r["train_loss"] for r in results["digits-cnn", "none"]])
    ctx.check(np.mean(bn_gap) < np.mean(plain_gap) - GAP_MARGIN and all(a < b for a, b in zip(bn_gap, plain_gap))
              and fits_better,
              f"digits-cnn: BN narrows the generalization gap: its val − train loss is smaller for every seed and by "
              f"more than {GAP_MARGIN} on average — although it also fits the training set better",
              f"{np.mean(bn_gap):.3f} vs {np.mean(plain_gap):.3f}")
    if not ctx.quick:
        acc_gap = {norm: np.mean([r["train_acc"] - r["val_acc"] for r in results["digits-mlp", norm]])
                   for norm in ("batch", "none")}
        ctx.measure("digits-mlp: val − train loss with / without BN",
                    f"{np.mean(gaps('digits-mlp', 'batch')):.3f} / {np.mean(gaps('digits-mlp', 'none')):.3f}")
        ctx.measure("digits-mlp: train − val accuracy with / without BN",
                    f"{acc_gap['batch']:.3f} / {acc_gap['none']:.3f}")
        ctx.log("The MLP's gap barely moves with BN (see the table): the regularizing effect is weak and depends "
                "on the architecture; it is no substitute for data, augmentation or weight decay.")

    # ------------------------------------------------------------ (B) the batch noise
    model = bn_models[0]
    train_copy = copy.deepcopy(model).train()  # train-mode forwards would move the running stats
    g = torch.Generator().manual_seed(1)
    probes, probe_y = xv[:probes_n], yv[:probes_n]
    pool = data.x_train
    spread, samples = {}, {}
    with torch.no_grad():
        alone = model(probes)
        eval_diff = 0.0
        for b in BATCHES:
            outs = []
            for _ in range(draws):
                mates = pool[torch.randperm(len(pool), generator=g)[:b - 1]]
                outs.append(torch.stack([train_copy(torch.cat([p[None], mates]))[0] for p in probes]))
                if b == BATCHES[1]:
                    same = torch.stack([model(torch.cat([p[None], mates]))[0] for p in probes])
                    eval_diff = max(eval_diff, (same - alone).abs().max().item())
            outs = torch.stack(outs)  # (draws, probes, classes)
            spread[b] = outs.std(0).mean().item()  # std of a logit over batch-mates, averaged over probes, classes
            samples[b] = outs[:, 0, probe_y[0]].numpy()
    ctx.table(f"BN CNN, train mode: std of a validation digit's logits over {draws} random sets of batch-mates "
              f"(mean over {probes_n} digits and 10 classes)", ["batch size", "logit std (train mode)"],
              [[b, spread[b]] for b in BATCHES])
    slope = float(np.polyfit(np.log(BATCHES), np.log([spread[b] for b in BATCHES]), 1)[0])
    ctx.measure(f"eval mode: max |logit among {BATCHES[1] - 1} random batch-mates − logit alone|", eval_diff)
    ctx.measure("slope of log(noise) against log(batch size)", slope)
    ctx.check(eval_diff < 1e-4 and spread[BATCHES[0]] > 0.05,
              "BN's batch noise: in train mode the same digit's logits move with its batch-mates, in eval mode they "
              "do not (equal to the digit alone within 1e-4)",
              f"train-mode std {spread[BATCHES[0]]:.3f} at batch {BATCHES[0]}")
    ctx.check(all(spread[a] > spread[b] for a, b in zip(BATCHES, BATCHES[1:])) and -0.8 < slope < -0.3,
              "the noise shrinks as the batch grows, roughly as 1/√B (log-log slope between −0.8 and −0.3): the "
              "regularizing effect weakens at large batch", f"slope {slope:.2f}")

    # ------------------------------------------------------------ figure
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4.4))
    for i, (name, _s) in enumerate(models):
        for j, (norm, color) in enumerate((("batch", "tab:red"), ("none", "tab:gray"))):
            vals = gaps(name, norm)
            ax1.scatter(np.full(len(vals), 2 * i + 0.3 * (j - 0.5)), vals, color=color,
                        label=("BN" if norm == "batch" else "no norm") if i == 0 else None)
            ax1.plot([2 * i + 0.3 * (j - 0.5) - 0.1, 2 * i + 0.3 * (j - 0.5) + 0.1], [np.mean(vals)] * 2,
                     color=color, lw=2)
    ax1.set_xticks([2 * i for i in range(len(models))], [m for m, _ in models])
    ax1.set_ylabel("val loss − train loss (eval mode)")
    ax1.set_title("generalization gap per seed (bar = mean)")
    ax1.legend()
    ax2.loglog(BATCHES, [spread[b] for b in BATCHES], marker="o", color="tab:red", label="train mode")
    ref = spread[BATCHES[0]] * (np.array(BATCHES) / BATCHES[0]) ** -0.5
    ax2.loglog(BATCHES, ref, "k:", label="∝ 1/√B")
    ax2.set_xlabel("batch size B")
    ax2.set_ylabel("logit std over batch-mates")
    ax2.set_title(f"BN's batch noise (eval mode: max |Δ logit| = {eval_diff:.1g})")
    ax2.legend()
    for b, color in zip(BATCHES, plt.cm.viridis(np.linspace(0, 0.8, len(BATCHES)))):
        ax3.hist(samples[b], bins=12, alpha=0.5, color=color, label=f"B = {b}")
    ax3.axvline(alone[0, probe_y[0]].item(), color="k", ls="--", label="eval mode (any batch)")
    ax3.set_xlabel("true-class logit of one validation digit")
    ax3.set_title("one digit among random batch-mates, train mode")
    ax3.legend(fontsize=8)
    fig.tight_layout()
    ctx.figure(fig, "bn_regularizer")


LAB = Lab(id="1.4.6", title="Is BN a regularizer?",
          question="Batch Normalization是否属于正则化方法？它是如何起到正则化效果的？ — Is BN a regularizer, and how?",
          answer=ANSWER, run=run, uses="norms")
