"""1.5.2 BN's principle and internal covariate shift: how far a hidden layer's pre-activation statistics drift during
training with and without BN; the BN transform checked by hand; BN's wider stable LR range, kept even when a covariate
shift is injected after every BN (Santurkar et al. 2018)."""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from goodfit.labs import Lab, LabContext

ANSWER = r"""
**The transform.** For one unit (a channel, for images) with values x₁…x_m over the mini-batch B
(and over positions):

  μ_B = (1/m) Σᵢ xᵢ,  σ²_B = (1/m) Σᵢ (xᵢ − μ_B)²,  x̂ᵢ = (xᵢ − μ_B)/√(σ²_B + ε),  yᵢ = γ·x̂ᵢ + β

with a learned scale γ and shift β per unit (Ioffe & Szegedy 2015). x̂ has mean 0 and variance ≈ 1 over the batch
whatever the layers below did; γ, β give the freedom back (γ = σ_B, β = μ_B undoes the normalization), so nothing
is lost in expressiveness, and a bias in the layer before BN is redundant (μ_B cancels it). The normalization is
part of the model: gradients flow through μ_B and σ²_B. At test time fixed running statistics replace μ_B, σ²_B
(1.5.3).

**Internal covariate shift (ICS)** is Ioffe & Szegedy's name for the change of the distribution of a layer's
inputs during training, because the parameters of all layers below it change at every step: each layer chases a
moving input distribution, which they argued forces small learning rates and careful initialization and drives
saturating units into saturation. BN pins each unit's pre-activation mean and variance (per mini-batch) to β and
γ², which move only as fast as those two parameters are learned.

**What BN actually buys — the modern view.** Santurkar et al. (2018, "How does batch normalization help
optimization?") show that reducing ICS is not why BN works: a network with random, step-to-step-varying shifts
injected right after each BN (a strong, deliberate ICS) trains almost as well as with plain BN, and measured
through the gradients BN does not necessarily reduce ICS. What BN does is make the loss landscape smoother (smaller
Lipschitz constants of the loss and its gradient), so gradients stay predictive over longer steps: larger learning
rates are stable and initialization matters less. Also at work: the weights feeding a BN become scale-invariant
(w and c·w give the same output, the gradient shrinks as 1/‖w‖), which makes the effective learning rate adapt;
and the batch statistics add a little regularizing noise (1.4.6, 1.5.8). BN fixes only the first two moments of
each unit: the shape of the distribution and the correlations between units still move.

**The lab.** digits MLP, 3 hidden layers of 128 units, He initialization, no dropout. (A) `goodfit.run` with
`model.norm` = batch | none (AdamW, the recipe's LR); a step callback forwards a fixed probe of 512 training
digits (through a train-mode copy of the model, so nothing changes) every few steps and records, per unit of the
second hidden layer, the mean and std of its pre-activation — the activation's input: W·h without BN, BN's output
with it — and, for the BN net, of W·h before BN. (B) The BN layer's output recomputed by hand from the formula.
(C) Plain SGD for a fixed number of steps over a range of learning rates, without BN, with BN, and with BN plus an
injected shift after every BN: each step every unit is scaled by e^{s} and shifted by m, s ~ N(0, 0.3²),
m ~ N(0, 0.5²), redrawn every step (Santurkar et al.'s "noisy BN").
"""

# measured (seeds 0-2, 8 epochs AdamW): drift of the activation's input over training, mean |Δμ|/σ₀ and mean
# |ln σ/σ₀| over units: 0.02-0.03 with BN vs 1.0-1.1 and 0.3-0.4 without; W·h before BN drifts 0.15-0.2.
# SGD, 60 steps: largest LR whose final training loss < LOSS_OK for every seed: none 0.3, BN 3, BN + shift 1.
LAYER = 1            # the watched hidden layer (0-based: the second of three)
STEPS = 60           # SGD steps per run in (C)
LOSS_OK = 0.25       # "trains": final training loss (eval mode, full training split) below this
SHIFT = (0.3, 0.5)   # injected covariate shift: std of the log-scale s and of the shift m, redrawn every step
DRIFT_RATIO = 5.0    # without BN the activation's input must drift at least this many times more than with BN
STD_TOL = 0.1        # with BN the activation's input keeps |mean| < STD_TOL and |std − 1| < STD_TOL per unit (avg)
LR_RATIO = 3.0       # BN's largest trainable LR must be at least this many times the plain net's
WATCH_LR = 0.3       # the LR (in every grid) at which (C) records how much the activation's input moves per step


class _Shift(nn.Module):
    """Injected covariate shift after a BN (Santurkar et al. 2018, §2.1): y·e^{s} + m per unit, train mode only."""

    def __init__(self, features: int, generator: torch.Generator):
        super().__init__()
        self.features, self.generator = features, generator
        self.register_buffer("log_scale", torch.zeros(features))
        self.register_buffer("shift", torch.zeros(features))

    def redraw(self) -> None:
        self.log_scale = SHIFT[0] * torch.randn(self.features, generator=self.generator)
        self.shift = SHIFT[1] * torch.randn(self.features, generator=self.generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.log_scale.exp() + self.shift if self.training else x


def _mlp(norm: str, seed: int, data, shift: bool = False) -> nn.Sequential:
    from goodfit.models import build_model
    from goodfit.recipe import load_recipe

    recipe = load_recipe("digits-mlp", {"model.norm": norm, "model.dropout": 0, "model.depth": 3, "model.init": "he"})
    torch.manual_seed(seed)
    model = build_model(recipe.model, data.input_shape, data.num_outputs)
    if not shift:
        return model
    g = torch.Generator().manual_seed(seed + 1000)
    layers = []
    for m in model:
        layers.append(m)
        if isinstance(m, nn.BatchNorm1d):
            layers.append(_Shift(m.num_features, g))
    return nn.Sequential(*layers)


def _preact(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per-unit (mean, std) over `x` of hidden layer LAYER's linear output W·h ("wh") and of its activation's
    input ("act": W·h, or the BN output); on a train-mode copy, so the running statistics are left alone."""
    m = copy.deepcopy(model).train()
    linear = [mod for mod in m if isinstance(mod, nn.Linear)][LAYER]
    act = [mod for mod in m if isinstance(mod, nn.ReLU)][LAYER]
    seen = {}
    hooks = [linear.register_forward_hook(lambda _m, _a, out: seen.__setitem__("wh", out)),
             act.register_forward_pre_hook(lambda _m, args: seen.__setitem__("act", args[0]))]
    with torch.no_grad():
        m(x)
    for h in hooks:
        h.remove()
    return {k: (v.mean(0), v.std(0)) for k, v in seen.items()}


class _Probe:
    """goodfit callback: `_preact` on a fixed probe batch at the start and every `every` optimizer steps."""

    def __init__(self, every: int, n: int = 512):
        self.every, self.n, self.x = every, n, None
        self.steps: list[int] = []
        self.stats: list[dict] = []

    def _record(self, trainer, step: int) -> None:
        self.steps.append(step)
        self.stats.append(_preact(trainer.model, self.x))

    def on_fit_start(self, trainer, state) -> None:
        self.x = trainer.train_loader.x[:self.n]
        self._record(trainer, state.step)

    def on_step_end(self, trainer, state, loss) -> None:
        if state.step % self.every == 0:
            self._record(trainer, state.step)


def _drift(stats: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Per checkpoint: mean over units of |μ(t) − μ(0)|/σ(0) and of |ln σ(t)/σ(0)|."""
    mu0, sd0 = stats[0][key]
    mean = [((s[key][0] - mu0).abs() / sd0).mean().item() for s in stats]
    std = [(s[key][1] / sd0).log().abs().mean().item() for s in stats]
    return np.array(mean), np.array(std)


def _sgd(model: nn.Module, lr: float, seed: int, x, y, probe=None):
    """Plain SGD (no momentum) for STEPS steps of batch 64; the final training loss (eval mode, inf if it
    diverged) and, with a probe batch, `_preact` before every step."""
    from goodfit.data import TensorLoader

    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loader = TensorLoader(x, y, 64, seed=seed, drop_last=True)
    shifts = [m for m in model.modules() if isinstance(m, _Shift)]
    records, step, epoch = [], 0, 0
    while step < STEPS:
        for xb, yb in loader.epoch(epoch):
            for s in shifts:
                s.redraw()
            if probe is not None:
                records.append(_preact(model, probe))
            loss = F.cross_entropy(model(xb), yb)
            if not math.isfinite(loss.item()):
                return math.inf, records
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step == STEPS:
                break
        epoch += 1
    with torch.no_grad():
        final = F.cross_entropy(model.eval()(x), y).item()
    return (final if math.isfinite(final) else math.inf), records


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt

    import goodfit

    torch.set_num_threads(1)
    seeds = [0] if ctx.quick else [0, 1, 2]
    epochs = 3 if ctx.quick else 8

    # ------------------------------------------------------------ (A) drift of the pre-activation statistics
    probes, runs = {}, {}
    for norm in ("batch", "none"):
        for seed in seeds:
            probe = _Probe(every=5)
            runs[norm, seed] = goodfit.run("digits-mlp", {
                "seed": seed, "model.norm": norm, "model.depth": 3, "model.dropout": 0, "model.init": "he",
                "train.epochs": epochs, "train.threads": 1, "train.early_stopping.patience": None,
                "train.early_stopping.restore_best": False, "doctor.enabled": False},
                out=ctx.out / "runs", progress=False, callbacks=[probe])
            probes[norm, seed] = probe
    steps = np.array(probes["batch", seeds[0]].steps)
    curves = {}  # (net, quantity) -> (mean drift, std drift) averaged over seeds, per checkpoint
    for label, norm, key in (("no BN: W·h (= the activation's input)", "none", "act"),
                             ("BN: its output γx̂ + β (the activation's input)", "batch", "act"),
                             ("BN: W·h, before the BN", "batch", "wh")):
        d = [_drift(probes[norm, s].stats, key) for s in seeds]
        curves[label] = (np.mean([m for m, _ in d], 0), np.mean([v for _, v in d], 0))
    rows = [[label, c[0][-1], c[1][-1]] for label, c in curves.items()]
    ctx.table(f"drift of hidden layer {LAYER + 1}'s pre-activation statistics after {steps[-1]} AdamW steps (probe: "
              f"512 training digits), mean over 128 units and {len(seeds)} seed(s)",
              ["quantity", "mean |μ(t) − μ(0)| / σ(0)", "mean |ln σ(t)/σ(0)|"], rows)
    (plain_m, plain_s), (bn_m, bn_s), _ = curves.values()
    bn_stats = [probes["batch", s].stats for s in seeds]
    worst_mean = max(st["act"][0].abs().mean().item() for sts in bn_stats for st in sts)
    worst_std = max((st["act"][1] - 1).abs().mean().item() for sts in bn_stats for st in sts)
    ctx.check(worst_mean < STD_TOL and worst_std < STD_TOL,
              f"with BN the activation's input stays standardized at every checkpoint: mean over units of |μ| and of "
              f"|σ − 1| below {STD_TOL}", f"worst |μ| {worst_mean:.3f}, |σ − 1| {worst_std:.3f}")
    ctx.check(plain_m[-1] > DRIFT_RATIO * bn_m[-1] and plain_s[-1] > DRIFT_RATIO * bn_s[-1],
              f"without BN the same layer's pre-activation drifts over {DRIFT_RATIO:g}× more, in mean and in std "
              "(averaged over seeds): that drift is the internal covariate shift BN was designed to remove",
              f"mean drift {plain_m[-1]:.3f} vs {bn_m[-1]:.3f}, log-std drift {plain_s[-1]:.3f} vs {bn_s[-1]:.3f}")
    ctx.log("BN does not stop W·h itself from moving (third row); it cancels the move for the layer above. γ and β "
            "are learned, so the BN output is free to drift too — at the recipe's LR they barely do.")

    # ------------------------------------------------------------ (B) the transform by hand
    bn_run = runs["batch", seeds[0]]
    model = copy.deepcopy(bn_run.model).train()
    bn = [m for m in model if isinstance(m, nn.BatchNorm1d)][LAYER]
    seen = {}
    bn.register_forward_hook(lambda _m, args, out: seen.update(x=args[0], y=out))
    with torch.no_grad():
        model(bn_run.data.x_train[:64])
    x = seen["x"]
    mu, var = x.mean(0), x.var(0, unbiased=False)
    xhat = (x - mu) / torch.sqrt(var + bn.eps)
    by_hand = bn.weight * xhat + bn.bias
    diff = (by_hand - seen["y"]).abs().max().item()
    ctx.measure("x̂ over the batch: max |mean| / max |std − 1| over units",
                f"{xhat.mean(0).abs().max().item():.2g} / {(xhat.std(0, unbiased=False) - 1).abs().max().item():.2g}")
    ctx.measure("γ range / β range after training",
                f"{bn.weight.min().item():.3f}…{bn.weight.max().item():.3f} / "
                f"{bn.bias.min().item():.3f}…{bn.bias.max().item():.3f}")
    ctx.check(diff < 1e-5, "the BN layer's training-mode output on a batch of 64 equals γ·(x − μ_B)/√(σ²_B + ε) + β "
                           "computed by hand (biased batch variance), within 1e-5", f"max |Δ| {diff:.2g}")

    # ------------------------------------------------------------ (C) stable learning rates, with injected ICS
    data = bn_run.data
    xt, yt = data.x_train, data.y_train
    lrs = [0.3, 1.0, 3.0] if ctx.quick else [0.03, 0.1, 0.3, 1.0, 3.0, 10.0]
    variants = {"no BN": ("none", False), "BN": ("batch", False), "BN + injected shift": ("batch", True)}
    loss, moves = {}, {}
    for name, (norm, shift) in variants.items():
        for lr in lrs:
            for seed in seeds:
                watch = xt[:512] if lr == WATCH_LR else None
                loss[name, lr, seed], records = _sgd(_mlp(norm, seed, data, shift), lr, seed, xt, yt, watch)
                if watch is not None:
                    # how far the activation's input moves from one step to the next
                    moves.setdefault(name, []).extend(((b["act"][0] - a["act"][0]).abs() / a["act"][1]).mean().item()
                                                      for a, b in zip(records, records[1:]))
    moves = {n: float(np.mean(v)) for n, v in moves.items()}
    mean_loss = {(n, lr): float(np.mean([loss[n, lr, s] for s in seeds])) for n in variants for lr in lrs}
    ctx.table(f"plain SGD, {STEPS} steps of batch 64: final training loss (mean of {len(seeds)} seed(s); inf: "
              "diverged)", ["LR", *variants], [[lr, *(mean_loss[n, lr] for n in variants)] for lr in lrs])

    if mean_loss["BN", lrs[0]] > mean_loss["no BN", lrs[0]]:
        ctx.log(f"At LR {lrs[0]:g} BN is slower here ({mean_loss['BN', lrs[0]]:.3f} vs "
                f"{mean_loss['no BN', lrs[0]]:.3f}): its advantage is the range of learning rates that work, not speed "
                "at a fixed small one.")

    def largest(name):
        ok = [lr for lr in lrs if all(loss[name, lr, s] < LOSS_OK for s in seeds)]
        return max(ok) if ok else 0.0

    top = {n: largest(n) for n in variants}
    for n in variants:
        ctx.measure(f"{n}: largest LR with final training loss < {LOSS_OK} for every seed", top[n])
        ctx.measure(f"{n}: mean |Δμ|/σ of the activation's input from one step to the next (LR {WATCH_LR:g})",
                    moves[n])
    ctx.check(top["no BN"] > 0 and top["BN"] >= LR_RATIO * top["no BN"],
              f"BN trains at learning rates at least {LR_RATIO:g}× larger than the same net without BN, which "
              "diverges or stalls there: the smoother loss landscape of Santurkar et al.",
              f"largest trainable LR {top['BN']:g} vs {top['no BN']:g}")
    ctx.check(moves["BN + injected shift"] > 2 * moves["no BN"] and top["BN + injected shift"] > top["no BN"],
              "ICS is not the point: with a random shift injected after every BN the activation's input moves over "
              "2× more than without BN, yet that net still trains at a learning rate where the one without BN fails",
              f"move {moves['BN + injected shift']:.2f} vs {moves['no BN']:.2f}; largest trainable LR "
              f"{top['BN + injected shift']:g} vs {top['no BN']:g}")

    # ------------------------------------------------------------ figure
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4.4))
    colors = ("tab:gray", "tab:red", "tab:orange")
    for (label, (m, s)), color in zip(curves.items(), colors):
        ax1.plot(steps, m, color=color, label=f"{label}")
        ax1.plot(steps, s, color=color, ls="--")
    ax1.set_xlabel("AdamW step")
    ax1.set_ylabel("drift from step 0 (solid: mean |Δμ|/σ₀, dashed: |ln σ/σ₀|)")
    ax1.set_title(f"hidden layer {LAYER + 1}: drift of per-unit statistics")
    ax1.legend(fontsize=7)
    units = range(6)
    for norm, color, dx in (("none", "tab:gray", -0.15), ("batch", "tab:red", 0.15)):
        sts = probes[norm, seeds[0]].stats
        for k, st in enumerate(sts[::max(1, len(sts) // 6)]):
            mu, sd = st["act"][0][:6].numpy(), st["act"][1][:6].numpy()
            ax2.errorbar(np.array(units) + dx + 0.035 * k, mu, yerr=sd, fmt="o", ms=3, color=color,
                         alpha=0.35 + 0.1 * k, label=("no BN" if norm == "none" else "BN") if k == 0 else None)
    ax2.set_xlabel("unit (first 6 of 128)")
    ax2.set_ylabel("activation input: mean ± std over the probe")
    ax2.set_title("the same units at checkpoints through training (darker: later)")
    ax2.legend()
    for name, color in zip(variants, ("tab:gray", "tab:red", "tab:purple")):
        vals = [min(mean_loss[name, lr], 3.0) for lr in lrs]
        ax3.plot(lrs, vals, marker="o", color=color, label=name)
    ax3.axhline(LOSS_OK, color="k", ls=":", lw=1, label=f"trains (< {LOSS_OK})")
    ax3.set_xscale("log")
    ax3.set_yscale("log")
    ax3.set_xlabel("SGD learning rate")
    ax3.set_ylabel(f"training loss after {STEPS} steps (diverged: 3)")
    ax3.set_title("stable learning rates")
    ax3.legend(fontsize=8)
    fig.tight_layout()
    ctx.figure(fig, "bn_ics")


LAB = Lab(id="1.5.2", title="BN's principle and internal covariate shift",
          question="批归一化（Batch Normalization，BN）的核心原理是什么？它解决了训练中的\"内部协变量偏移（Internal Covariate "
                   "Shift）\"具体指什么？ — BN's principle; what \"internal covariate shift\" means.",
          answer=ANSWER, run=run, uses="norms, monitors")
