"""1.7.6 Bad initialization: too small / too large a weight std makes gradients vanish / explode; He init fixes it."""
from __future__ import annotations

import math
import statistics

import numpy as np
import torch
from torch import nn

from goodfit.labs import Lab, LabContext
from goodfit.labs.lab_1_3_2 import doctor_run

ANSWER = r"""
In a layer z = W h + b with fan-in n and weights of variance σ², Var(z) = n σ² E[h²]. For ReLU,
E[relu(z)²] = Var(z)/2, so each layer multiplies the signal's RMS by the **gain g = σ √(n/2)**, and
backpropagation multiplies the gradient by the same factor on the way back (it uses Wᵀ and the
same ReLU masks). Through L layers:

- **too small σ** (g < 1): activations shrink like g^l and the backpropagated signal like g^(L−l).
  A weight's gradient is the product of the two (∂L/∂W_l = δ_l h_{l−1}ᵀ), so *every* layer's
  gradient is ∝ g^(L−1): with g = 0.08 and 8 hidden layers, 10⁻⁹ of normal. Nothing learns except
  the biases and the output layer, whose inputs the deeper layers barely move; the first/last
  layer gradient ratio then collapses too. The loss sits at chance level: **vanishing gradients**.
- **too large σ** (g > 1): activations and gradients grow like g^(L−1): logits in the thousands
  (initial loss ≫ ln K), gradients 10³× normal, the first SGD step overshoots and the loss overflows
  within a few steps: **exploding gradients**. (Saturating activations add their own vanishing: large
  pre-activations put tanh/sigmoid on their flat tails.)
- **σ = √(2/n)** (He / Kaiming init, He et al. 2015) makes g = 1 for ReLU: every layer keeps the
  signal's scale in both directions at any depth. Xavier/Glorot σ = √(2/(n_in + n_out)) (≈ √(1/n))
  does the same for tanh / linear units (gain 1 around 0); LSUV rescales each layer on real data
  until its output has unit variance; orthogonal init keeps norms exactly for linear layers.

Other remedies: normalization layers (batch/layer norm re-standardize each layer's output, so the
init scale matters far less), residual connections (an identity path for the gradient), gradient
clipping against explosions, and a bias toward the prior for the output layer.

The lab builds a deep ReLU MLP (8 hidden layers of 128) on digits and initializes its weights with
`model.init: normal(std=σ)` for σ too small and too large, and `he`. It measures each layer's
activation RMS at init (its own forward pass) against g = σ√(n/2), the per-layer gradient norms
the doctor records every step (doctor.jsonl), and the doctor's labels.
"""

DEPTH, WIDTH = 8, 128
INITS = ("normal(std=0.001)", "normal(std=0.01)", "he", "normal(std=0.3)")
SMALL, LARGE = INITS[:2], INITS[3]
BASE = {"model.depth": DEPTH, "model.width": WIDTH, "optimizer.lr": 0.05, "doctor.every": 1}
GAIN_TOL = 0.15        # measured per-layer RMS gain within this (relative) of σ√(n/2); width 128, 512 inputs
VANISHED, EXPLODED = 1e-4, 1e2   # step-1 gradient norms, as a multiple of He init's (median over layers)


def init_profile(spec: str, x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[list[float], list[float]]:
    """Own forward/backward pass at init: RMS of each hidden layer's output, and each weight's gradient norm."""
    from goodfit.nn import init

    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    n = x.shape[1]
    for _ in range(DEPTH):
        layers += [nn.Linear(n, WIDTH), nn.ReLU()]
        n = WIDTH
    model = nn.Sequential(*layers, nn.Linear(n, 10))
    init.apply(model, spec)
    rms, h = [], x
    for m in model:
        h = m(h)
        if isinstance(m, nn.ReLU):
            rms.append(float(h.detach().pow(2).mean().sqrt()))
    nn.functional.cross_entropy(h, y).backward()
    return rms, [float(m.weight.grad.norm()) for m in model if isinstance(m, nn.Linear)]


def sigma(spec: str, fan_in: int) -> float:
    return math.sqrt(2 / fan_in) if spec == "he" else float(spec.split("=")[1].rstrip(")"))


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt
    from sklearn.datasets import load_digits

    torch.set_num_threads(1)
    seeds = (0,) if ctx.quick else (0, 1)
    epochs = 3 if ctx.quick else 5
    runs = {(spec, s): doctor_run(ctx, f"{spec.replace('(', '_').replace(')', '').replace('=', '')}_seed{s}",
                                  {**BASE, "model.init": spec, "seed": s, "train.epochs": epochs})
            for spec in INITS for s in seeds}
    default_every = doctor_run(ctx, "large_default_every", {**BASE, "model.init": LARGE, "seed": 0, "train.epochs": 1,
                                                            "doctor.every": 25})
    ctx.log(f"digits MLP with {DEPTH} hidden ReLU layers of {WIDTH}, SGD η = {BASE['optimizer.lr']}, {epochs} epochs, "
            f"seeds {list(seeds)}, the doctor sampling every step")

    # ------------------------------------------------------------ forward: activation scale per layer at init
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32)
    x = ((x - x.mean(0)) / x.std(0).clamp_min(1e-6))[:512]
    y = torch.tensor(data.target)[:512]
    profiles = {spec: init_profile(spec, x, y, 0) for spec in INITS}
    rows, gain_err = [], 0.0
    for spec in INITS:
        rms, grads = profiles[spec]
        measured = (rms[-1] / rms[0]) ** (1 / (DEPTH - 1))  # geometric mean gain over hidden layers 2..8 (fan-in 128)
        predicted = sigma(spec, WIDTH) * math.sqrt(WIDTH / 2)
        gain_err = max(gain_err, abs(measured / predicted - 1))
        rows.append([spec, f"{predicted:.3g}", f"{measured:.3g}", f"{rms[0]:.2g}", f"{rms[-1]:.2g}",
                     f"{grads[0]:.2g}", f"{grads[-1]:.2g}"])
    ctx.table("at init (own forward/backward pass, 512 digits): predicted per-layer gain g = σ√(n/2), measured "
              "gain, RMS of hidden layers 1 and 8, gradient norm of the first and the output layer",
              ["init", "g predicted", "g measured", "RMS h1", "RMS h8", "‖∇W₁‖", "‖∇W_out‖"], rows)
    ctx.check(gain_err < GAIN_TOL, f"each ReLU layer scales the signal's RMS by g = σ√(n/2) (within {GAIN_TOL:.0%}, "
              "geometric mean over layers 2-8, every init)", f"worst {gain_err:.1%}")

    # ------------------------------------------------------------ backward: per-layer gradient norms during training
    def step1(spec, s):
        return list(runs[spec, s]["samples"][0]["grad_norm"].values())

    rel = {spec: statistics.median(float(np.median(np.array(step1(spec, s)) / np.array(step1("he", s))))
                                   for s in seeds) for spec in INITS}
    for spec in INITS:
        ctx.measure(f"{spec}: step-1 gradient norms / He's (median over layers and seeds)", rel[spec])
    ctx.check(all(rel[spec] < VANISHED for spec in SMALL) and rel[LARGE] > EXPLODED,
              f"per-layer gradient norms at step 1 vanish for the small inits (< {VANISHED:g} × He's) and explode for "
              f"the large one (> {EXPLODED:g} × He's), in every layer",
              ", ".join(f"{spec}: {rel[spec]:.2g}" for spec in INITS))
    fl = {}
    for spec in INITS:
        ratios = [list(x["grad_norm"].values()) for x in runs[spec, seeds[0]]["samples"]]
        fl[spec] = [g[0] / g[-1] if g[-1] > 0 and math.isfinite(g[0] / g[-1]) else math.nan for g in ratios]
    acc = {spec: [runs[spec, s]["val_acc"] for s in seeds] for spec in INITS}
    ctx.check(all(r["nonfinite"] for r in (runs[LARGE, s] for s in seeds))
              and all(a < 0.3 for spec in SMALL for a in acc[spec]) and min(acc["he"]) >= 0.85,
              "outcome: the large init diverges (NaN), the small ones stay at chance (val acc < 0.3), He init "
              "trains (val acc ≥ 0.85), every seed", ", ".join(f"{spec}: {np.mean(acc[spec]):.2f}" for spec in INITS))

    # ------------------------------------------------------------ the doctor's labels
    def show(r, ids=None):
        return ", ".join(f"{f['id']}[{f['severity']}]" + (f" {f['evidence']}" if ids and f["id"] in ids else "")
                         for f in r["findings"])

    bad = [f"{spec} seed {s}: {show(runs[spec, s])}" for spec in SMALL for s in seeds
           if "vanishing_gradients" not in runs[spec, s]["labels"]]
    ctx.check(not bad, "doctor label: every too-small init is labelled `vanishing_gradients` (warning)", "; ".join(bad))
    peak = max(x["total_grad_norm"] for spec in SMALL for s in seeds for x in runs[spec, s]["samples"])
    he_typical = statistics.median(x["total_grad_norm"] for s in seeds for x in runs["he", s]["samples"])
    ctx.measure("too-small inits: largest total gradient norm of any step / He init's median", f"{peak:.2g} / "
                f"{he_typical:.2g}")
    bad = [f"{spec} seed {s}: {show(runs[spec, s], ('exploding_gradients',))}" for spec in SMALL for s in seeds
           if "exploding_gradients" in runs[spec, s]["labels"]]
    ctx.check(not bad, "doctor label [DOCTOR CHECK]: no too-small init is labelled `exploding_gradients` (no step's "
              f"gradient norm exceeds {peak:.2g}, He init's typical one is {he_typical:.2g})", "; ".join(bad))
    bad = [f"{LARGE} seed {s}: {show(runs[LARGE, s])}" for s in seeds
           if "exploding_gradients" not in runs[LARGE, s]["labels"]]
    ctx.check(not bad, "doctor label: the too-large init is labelled `exploding_gradients` (sampling every step)",
              "; ".join(bad))
    ok = "exploding_gradients" in default_every["labels"]
    ctx.check(ok, "doctor label [DOCTOR CHECK]: ... and with the default sampling period (doctor.every: 25) too",
              "" if ok else f"steps before NaN {sum(map(math.isfinite, default_every['losses']))}, samples "
              f"{len(default_every['samples'])}, step-1 grad norms "
              f"{[round(g) for g in default_every['samples'][0]['grad_norm'].values()]}: {show(default_every)}")
    bad = [f"seed {s}: {show(runs['he', s])}" for s in seeds
           if {"vanishing_gradients", "exploding_gradients"} & runs["he", s]["labels"]
           or runs["he", s]["diagnosis"]["verdict"] != "good_fit"]
    ctx.check(not bad, "doctor label: He init → verdict good_fit, no vanishing/exploding gradients", "; ".join(bad))

    # ------------------------------------------------------------ figure
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 4.6))
    colors = dict(zip(INITS, ["tab:purple", "tab:blue", "tab:green", "tab:red"]))
    for spec in INITS:
        rms, _ = profiles[spec]
        ax1.semilogy(range(1, DEPTH + 1), rms, "o-", color=colors[spec], label=spec)
        ax2.semilogy(range(1, DEPTH + 2), step1(spec, seeds[0]), "o-", color=colors[spec], label=spec)
        ax3.semilogy(range(1, len(fl[spec]) + 1), fl[spec], color=colors[spec], lw=1, label=spec)
    ax1.set_xlabel("hidden layer")
    ax1.set_ylabel("RMS of the layer's output at init")
    ax1.set_title("forward: the signal shrinks / grows by g per layer")
    ax1.legend(fontsize=8)
    ax2.set_xlabel("weight layer (last = output)")
    ax2.set_ylabel("‖∇W‖ at step 1 (doctor.jsonl)")
    ax2.set_title("backward: per-layer gradient norms")
    from goodfit.doctor.rules import THRESHOLDS

    ax3.axhline(THRESHOLDS["vanishing_ratio"], color="grey", ls=":", lw=0.8, label="doctor: vanishing below")
    ax3.set_xlabel("optimizer step")
    ax3.set_ylabel("first / last layer gradient norm")
    ax3.set_title("the ratio the doctor watches (seed 0)")
    ax3.legend(fontsize=8)
    ctx.figure(fig, "init_gradients")


LAB = Lab(id="1.7.6", title="Bad initialization: vanishing and exploding gradients",
          question="参数初始化不当会导致哪些训练问题（如梯度消失、梯度爆炸）？如何通过初始化策略缓解这些问题？ — Bad init → "
                   "vanishing/exploding gradients; remedies.",
          answer=ANSWER, run=run, uses="init, doctor")
