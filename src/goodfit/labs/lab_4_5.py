"""4.5 Vanishing and exploding gradients: a deep sigmoid MLP's first layer gets 1e-7 of the last one's gradient;
ReLU + He, batch norm and residual connections each restore it; clipping tames an explosion."""
from __future__ import annotations

import math
import statistics

import numpy as np
import torch
from torch import nn

from goodfit.labs import Lab, LabContext
from goodfit.labs.lab_1_3_2 import doctor_run

ANSWER = r"""
Backpropagation multiplies the gradient by one Jacobian per layer: for h_l = φ(W_l h_{l−1}),
δ_{l−1} = W_lᵀ (φ'(z_l) ⊙ δ_l), so the gradient reaching layer 1 is a product of L factors
Wᵀ diag(φ'). Its size changes roughly like (‖W‖ · E[φ'])^L:

- **vanishing**: sigmoid has φ' ≤ 1/4 (tanh ≤ 1, but ≈ 0 when saturated). With weights of gain ≤ 1,
  every layer divides the gradient by ≥ 4: the first layers of a deep sigmoid MLP get 10⁻⁶–10⁻⁸
  of what the output layer gets and stop learning, although the loss still has a slope. The same
  happens in RNNs through time (LSTM/GRU gates are the remedy there).
- **exploding**: factors > 1 (too large an init, a too-large LR, recurrent weights with spectral
  radius > 1) grow the gradient geometrically; one step jumps far, the loss overflows to NaN.

The doctor watches the first/last layer gradient-norm ratio (vanishing below 10⁻³, AutoTrainer's
threshold; exploding above 70 or when the total norm grows ×10³) and NaNs.

**Remedies, each aimed at one factor of the product**
- **ReLU-family activations + He init**: φ' = 1 on the active half and σ = √(2/n) makes each
  factor ≈ 1 (lab 1.7.6).
- **Normalization** (batch/layer norm before the activation): keeps z at unit scale, so sigmoid
  works in its steep middle (φ' ≈ 0.2) and the norm's 1/σ_batch rescales the backward signal;
  the product no longer depends on depth.
- **Residual connections** h_l = h_{l−1} + F(h_{l−1}): the Jacobian is I + ∂F/∂h, so an identity
  path carries the gradient to every layer undiminished (ResNets, transformers).
- **Gradient clipping** (g ← g·min(1, c/‖g‖)) bounds every step: it does not fix the product's size
  but stops an explosion from wrecking the weights (lab 4.3). Also: lower LR, warmup, careful init.

The lab trains goodfit's digits MLP with 8 hidden layers of 128 (plain SGD; η = 0.5 for the sigmoid
nets, whose per-layer gradients are ≤ 1/4 of a ReLU net's, η = 0.05 for the ReLU nets) as a sigmoid
net, then with each remedy; the residual pair (the same sigmoid net with and without identity
skips) is a hand-written model and loop watched by `goodfit.Doctor`. For explosions it uses a ReLU
net initialized with N(0, 0.3²) (gain 2.4 per layer), without and with `train.grad_clip: {norm: 1}`.
"""

DEPTH, WIDTH = 8, 128
LR_SIGMOID, LR_RELU = 0.5, 0.05  # each family at an LR where it trains (sigmoid's gradients are ≤ 1/4 of ReLU's)
BASE = {"model.depth": DEPTH, "model.width": WIDTH, "doctor.every": 1}
CASES = {  # name -> overrides of digits-mlp (with BASE)
    "sigmoid": {"model.activation": "sigmoid", "optimizer.lr": LR_SIGMOID},
    "fix: ReLU + He init": {"model.activation": "relu", "model.init": "he", "optimizer.lr": LR_RELU},
    "fix: sigmoid + batch norm": {"model.activation": "sigmoid", "model.norm": "batch", "optimizer.lr": LR_SIGMOID},
    "exploding: ReLU, N(0, 0.3²)": {"model.activation": "relu", "model.init": "normal(std=0.3)",
                                    "optimizer.lr": LR_RELU},
    "fix: + clipping (norm 1)": {"model.activation": "relu", "model.init": "normal(std=0.3)", "optimizer.lr": LR_RELU,
                                 "train.grad_clip": {"norm": 1.0}},
}
VANISH = 1e-4       # the sigmoid net's first/last gradient-norm ratio must be below this
HEALTHY = 1e-2      # ... and every fix's above this (median over the run)
FIXED_ACC = 0.8     # val accuracy of a fixed vanishing case (quick mode's 4 epochs: ≥ 0.83 measured)
CLIPPED_ACC = 0.5   # val accuracy of the clipped explosion (its bad init still costs it: it starts at loss ~10³)


class SigmoidMLP(nn.Module):
    """Linear → [sigmoid → Linear] × DEPTH, with (h + F(h)) or without (F(h)) identity skips around each block."""

    def __init__(self, residual: bool):
        super().__init__()
        self.residual = residual
        self.stem = nn.Linear(64, WIDTH)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Sigmoid(), nn.Linear(WIDTH, WIDTH)) for _ in range(DEPTH - 1))
        self.head = nn.Sequential(nn.Sigmoid(), nn.Linear(WIDTH, 10))

    def forward(self, x):
        h = self.stem(x.flatten(1))
        for block in self.blocks:
            h = h + block(h) if self.residual else block(h)
        return self.head(h)


def hand_loop(data, residual: bool, seed: int, epochs: int) -> dict:
    """Plain PyTorch training watched by goodfit.Doctor; own per-layer gradient norms every step."""
    import goodfit

    torch.manual_seed(seed)
    model = SigmoidMLP(residual)
    opt = torch.optim.SGD(model.parameters(), lr=LR_SIGMOID)
    n, bs = len(data.x_train), 64
    doctor = goodfit.Doctor(model, opt, task="classification", num_classes=10, every=1,
                            steps_per_epoch=math.ceil(n / bs))
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    grads, gen = [], torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            loss.backward()
            grads.append([float(w.grad.norm()) for w in weights])
            opt.step()
            doctor.step(loss)
        with torch.no_grad():
            out = model(data.x_val)
            val_loss = float(nn.functional.cross_entropy(out, data.y_val))
            acc = float((out.argmax(1) == data.y_val).float().mean())
        doctor.epoch(val_loss=val_loss, accuracy=acc)
    diagnosis = doctor.report()
    doctor.close()
    return {"grads": grads, "val_acc": acc, "diagnosis": diagnosis,
            "labels": {f.id for f in diagnosis.warnings()}}


def first_last(grads: list[list[float]]) -> list[float]:
    return [g[0] / g[-1] if g[-1] > 0 else math.nan for g in grads]


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt

    torch.set_num_threads(1)
    seeds = (0,) if ctx.quick else (0, 1)
    epochs = 4 if ctx.quick else 8
    runs = {(name, s): doctor_run(ctx, f"case{i}_seed{s}", {**BASE, **o, "seed": s, "train.epochs": epochs})
            for i, (name, o) in enumerate(CASES.items()) for s in seeds}
    data = runs["sigmoid", seeds[0]]["run"].data  # the same standardized digits splits for the hand-written loop
    hand = {(kind, s): hand_loop(data, kind == "residual", s, epochs) for kind in ("plain", "residual") for s in seeds}
    ctx.log(f"digits MLP, {DEPTH} hidden layers of {WIDTH}, SGD η = {LR_SIGMOID} (sigmoid nets) / {LR_RELU} "
            f"(ReLU nets), {epochs} epochs, seeds {list(seeds)}; "
            "recipes through goodfit.run (doctor every step), the residual pair through a hand-written loop + "
            "goodfit.Doctor")

    # ------------------------------------------------------------ measured ratios
    grads = {key: [list(x["grad_norm"].values()) for x in r["samples"]] for key, r in runs.items()}
    grads.update({("fix: residual connections", s): hand["residual", s]["grads"] for s in seeds})
    grads.update({("sigmoid, hand-written loop", s): hand["plain", s]["grads"] for s in seeds})
    names = [*CASES, "sigmoid, hand-written loop", "fix: residual connections"]
    ratio = {key: first_last(g) for key, g in grads.items()}

    def med(name):
        return max(statistics.median([v for v in ratio[name, s] if math.isfinite(v)] or [math.nan]) for s in seeds)

    def worst(name):
        return min(statistics.median([v for v in ratio[name, s] if math.isfinite(v)] or [math.nan]) for s in seeds)

    acc = {name: [runs[name, s]["val_acc"] for s in seeds] for name in CASES}
    acc["sigmoid, hand-written loop"] = [hand["plain", s]["val_acc"] for s in seeds]
    acc["fix: residual connections"] = [hand["residual", s]["val_acc"] for s in seeds]
    labels = {name: sorted({x for s in seeds for x in runs[name, s]["labels"]}) for name in CASES}
    labels["sigmoid, hand-written loop"] = sorted({x for s in seeds for x in hand["plain", s]["labels"]})
    labels["fix: residual connections"] = sorted({x for s in seeds for x in hand["residual", s]["labels"]})
    ctx.table("first/last layer gradient-norm ratio (step 1, and median over the run; worst seed), final val "
              "accuracy (mean) and the doctor's warnings",
              ["case", "ratio step 1", "ratio median", "val acc", "doctor (warning/error)"],
              [[name, f"{min(ratio[name, s][0] for s in seeds):.2g}", f"{worst(name):.2g}",
                f"{np.nanmean(acc[name]):.3f}" if not any(map(math.isnan, acc[name])) else "diverged",
                ", ".join(labels[name]) or "(none)"] for name in names])

    sig = [ratio["sigmoid", s] for s in seeds] + [ratio["sigmoid, hand-written loop", s] for s in seeds]
    top = max(max(r[0], statistics.median(r)) for r in sig)
    ctx.check(top < VANISH, f"deep sigmoid MLP: the first layer's gradient norm is < {VANISH:g} × the output "
              "layer's, at step 1 and over the run (median), every seed, recipe and hand-written model",
              f"largest {top:.2g}")
    per_layer = [(r[0]) ** (1 / DEPTH) for r in sig]
    ctx.check(max(per_layer) < 0.25, "each sigmoid layer divides the gradient by more than 4 (σ' ≤ 1/4, weights of "
              "gain < 1): geometric-mean factor per layer at step 1 < 0.25",
              f"{min(per_layer):.3f}…{max(per_layer):.3f}")
    fixes = ["fix: ReLU + He init", "fix: sigmoid + batch norm", "fix: residual connections"]
    ctx.check(all(worst(name) > HEALTHY and min(acc[name]) >= FIXED_ACC for name in fixes),
              f"each fix (ReLU + He, batch norm, residual connections) keeps the median ratio > {HEALTHY:g} and trains "
              f"(val acc ≥ {FIXED_ACC} on every seed) where the sigmoid net stays at chance",
              ", ".join(f"{n.split(': ')[1]}: {worst(n):.2g} / {min(acc[n]):.2f}" for n in fixes)
              + f"; sigmoid: {max(acc['sigmoid']):.2f}")
    boom = [runs["exploding: ReLU, N(0, 0.3²)", s] for s in seeds]
    clipped = [runs["fix: + clipping (norm 1)", s] for s in seeds]
    he_step1 = [list(runs["fix: ReLU + He init", s]["samples"][0]["grad_norm"].values()) for s in seeds]
    boom_step1 = [list(r["samples"][0]["grad_norm"].values()) for r in boom]
    factor = min(float(np.median(np.array(b) / np.array(h))) for b, h in zip(boom_step1, he_step1))
    ctx.measure("N(0, 0.3²) init: step-1 gradient norms / He init's (median over layers, worst seed)", factor)
    ctx.check(all(r["nonfinite"] for r in boom) and factor > 100,
              "exploding: with N(0, 0.3²) init the step-1 gradients are > 100× He init's and the loss overflows to "
              "NaN (every seed)", f"{factor:.3g}×")
    ctx.check(all(not r["nonfinite"] and r["progress"] > 0.9 for r in clipped)
              and min(r["val_acc"] for r in clipped) >= CLIPPED_ACC,
              f"clipping the global gradient norm at 1 keeps the same run finite and training: its loss falls by > 90% "
              f"and val acc ≥ {CLIPPED_ACC} (chance 0.1), every seed",
              ", ".join(f"loss −{r['progress']:.0%}, acc {r['val_acc']:.2f}" for r in clipped))

    # ------------------------------------------------------------ the doctor's labels
    def show(fs):
        return ", ".join(f"{f['id']}[{f['severity']}]" for f in fs)

    bad = [f"seed {s}: {show(runs['sigmoid', s]['findings'])}" for s in seeds
           if "vanishing_gradients" not in runs["sigmoid", s]["labels"]]
    bad += [f"hand-written seed {s}: {hand['plain', s]['labels']}" for s in seeds
            if "vanishing_gradients" not in hand["plain", s]["labels"]]
    ctx.check(not bad, "doctor label: the deep sigmoid MLP is labelled `vanishing_gradients` (recipe and hand-written "
              "loop, every seed)", "; ".join(bad))
    bad = [f"{name} seed {s}: {show(runs[name, s]['findings'])}" for name in fixes[:2] for s in seeds
           if {"vanishing_gradients", "exploding_gradients"} & runs[name, s]["labels"]
           or runs[name, s]["diagnosis"]["verdict"] != "good_fit"]
    bad += [f"residual seed {s}: {hand['residual', s]['diagnosis'].verdict} {hand['residual', s]['labels']}"
            for s in seeds if {"vanishing_gradients", "exploding_gradients"} & hand["residual", s]["labels"]
            or hand["residual", s]["diagnosis"].verdict != "good_fit"]
    ctx.check(not bad, "doctor label: each vanishing fix → verdict good_fit, no vanishing/exploding gradients",
              "; ".join(bad))
    bad = [f"seed {s}: {show(r['findings'])}" for s, r in zip(seeds, boom)
           if not (r["failed"] and {"exploding_gradients", "divergence"} <= r["labels"])]
    ctx.check(not bad, "doctor label: the N(0, 0.3²) ReLU net → `exploding_gradients` and a `divergence` error",
              "; ".join(bad))
    bad = [f"seed {s}: {show(r['findings'])}" for s, r in zip(seeds, clipped)
           if {"exploding_gradients", "divergence"} & r["labels"]]
    ctx.check(not bad, "doctor label: with clipping, neither `exploding_gradients` nor `divergence` (the remaining "
              "`bad_initial_loss` is the init itself, which clipping does not fix)", "; ".join(bad))

    # ------------------------------------------------------------ figure
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 4.8))
    colors = dict(zip(names, ["tab:red", "tab:green", "tab:blue", "k", "tab:orange", "tab:pink", "tab:purple"]))
    for name in names:
        g = grads[name, seeds[0]][0]
        ax1.semilogy(range(1, len(g) + 1), g, "o-", color=colors[name], label=name, ms=4)
        r = np.array(ratio[name, seeds[0]], dtype=float)
        ok = np.isfinite(r) & (r > 0)
        ax2.semilogy(np.arange(1, len(r) + 1)[ok], r[ok], color=colors[name], lw=1, label=name)
    from goodfit.doctor.rules import THRESHOLDS

    ax1.set_xlabel("weight layer (1 = first, last = output)")
    ax1.set_ylabel("‖∇W‖ at step 1")
    ax1.set_title("per-layer gradient norms at the first step")
    ax1.legend(fontsize=7)
    ax2.axhline(THRESHOLDS["vanishing_ratio"], color="grey", ls=":", lw=0.8)
    ax2.axhline(THRESHOLDS["exploding_ratio"], color="grey", ls="--", lw=0.8)
    ax2.set_xlabel("optimizer step")
    ax2.set_ylabel("‖∇W_first‖ / ‖∇W_last‖")
    ax2.set_title("first/last ratio during training (dotted/dashed: the doctor's thresholds)")
    ctx.figure(fig, "vanishing_exploding")


LAB = Lab(id="4.5", title="Vanishing and exploding gradients",
          question="梯度消失与梯度爆炸 — vanishing and exploding gradients",
          answer=ANSWER, run=run, uses="monitors, doctor")
