"""1.7.2 Xavier, He, LSUV: activation std across 24 layers for each init × activation."""
from __future__ import annotations

import numpy as np

from goodfit.labs import Lab, LabContext

ANSWER = r"""
A layer y = Wx with n_in inputs of variance Var(x) and i.i.d. zero-mean weights gives
Var(y) = n_in·Var(W)·E[x²]. Keeping the signal's scale constant through depth therefore fixes
Var(W) ∝ 1/n_in, with a constant (the **gain**²) that depends on what the activation does to
E[x²]; backpropagation gives the same condition with n_out.

| init | Var(W) | designed for |
|---|---|---|
| **Xavier / Glorot** (2010) | gain²·2/(n_in + n_out) | activations linear and symmetric around 0: tanh, softsign, sigmoid (centred), identity; gain 1 in the paper, torch's 5/3 for tanh offsets its saturation |
| **He / Kaiming** (2015) | gain²/n_in (fan_in) or /n_out (fan_out) | ReLU family: ReLU zeroes half its input, so E[relu(y)²] = Var(y)/2 and gain² = 2; leaky ReLU with slope a: 2/(1 + a²) |
| **LeCun** | 1/n_in | SELU (self-normalizing nets); goodfit's `he` gives this for SELU |
| **orthogonal** (Saxe et al. 2014) | W orthogonal × gain | keeps every singular value 1: norms preserved exactly, good for deep/recurrent nets |
| **LSUV** (Mishkin & Matas 2016) | orthogonal, then each layer rescaled in forward order until its output variance on a data batch is 1 | any activation and architecture: measures instead of deriving |

Xavier's average of the two fans compromises between the forward (n_in) and backward (n_out)
conditions; He keeps the forward one and adds ReLU's factor 2. Use He for ReLU/leaky ReLU/GELU/SiLU,
Xavier (with tanh's gain) for tanh/sigmoid, LeCun for SELU, LSUV or orthogonal when unsure or for
very deep plain nets. With normalization layers or residual connections the choice matters much
less, but the final layer and residual branches still benefit from small scales.

**The lab** builds a 24-hidden-layer MLP (width 256, no normalization) for each init × activation,
runs a batch of 512 digits through it at initialization, and records each hidden layer's activation
standard deviation relative to the first layer's, the fraction of saturated tanh units, and the
gradient norm of the first layer's weights.
"""

DEPTH, WIDTH, BAND = 24, 256, (0.5, 2.0)
INITS = {"he": "he", "xavier": "xavier", "xavier gain 1": "xavier(gain=1)", "lsuv": "lsuv",
         "normal σ=0.01": "normal(std=0.01)", "normal σ=0.3": "normal(std=0.3)"}


def _measure(activation: str, spec: str, seed: int, x, y) -> dict:
    import torch
    import torch.nn.functional as F
    from torch import nn

    from goodfit.models import build_model
    from goodfit.recipe import Model

    torch.manual_seed(seed)
    model = build_model(Model(name="mlp", width=WIDTH, depth=DEPTH, activation=activation, norm="none", init=spec),
                        (64,), 10, batch=x)
    acts = [m for m in model if not isinstance(m, (nn.Linear, nn.Flatten, nn.Identity))]
    stds, saturated = [], []

    def record(module, inputs, out):
        stds.append(out.std().item())
        saturated.append((out.abs() > 0.99).float().mean().item())

    hooks = [m.register_forward_hook(record) for m in acts]
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    for h in hooks:
        h.remove()
    first = next(m for m in model if isinstance(m, nn.Linear))
    return {"ratio": np.array(stds) / stds[0], "saturated": saturated[-1], "grad": first.weight.grad.norm().item()}


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt
    import torch

    from goodfit.data import load_data
    from goodfit.recipe import load_recipe

    torch.set_num_threads(1)
    activations = ["relu", "tanh"] if ctx.quick else ["relu", "tanh", "selu"]
    seeds = [0] if ctx.quick else [0, 1, 2]
    recipe = load_recipe("digits-mlp")
    data = load_data(recipe.data, recipe.task, 0)
    x, y = data.x_train[:512], data.y_train[:512]
    ctx.log(f"MLP 64 → {DEPTH} × {WIDTH} → 10, no normalization, zero biases; 512 standardized digits; "
            f"seeds {seeds}; ratio = std of layer l's activations / layer 1's")

    res = {(a, name): [_measure(a, spec, s, x, y) for s in seeds] for a in activations for name, spec in INITS.items()}

    def ratios(a, name):  # (seeds, layers)
        return np.stack([r["ratio"] for r in res[a, name]])

    def in_band(a, name):
        r = ratios(a, name)
        return bool(np.all((r >= BAND[0]) & (r <= BAND[1])))

    rows = []
    for a in activations:
        for name, spec in INITS.items():
            r = ratios(a, name)
            rows.append([a, spec, float(np.exp(np.log(r[:, DEPTH // 2 - 1]).mean())), float(np.exp(np.log(r[:, -1]).mean())),
                         "yes" if in_band(a, name) else "no", float(np.mean([v["saturated"] for v in res[a, name]])),
                         float(np.mean([v["grad"] for v in res[a, name]]))])
    ctx.table(f"activation std relative to layer 1 (geometric mean over seeds), whether every layer stays within "
              f"[{BAND[0]}, {BAND[1]}]×, saturated fraction (|a| > 0.99) of the last layer, ‖∇W₁‖",
              ["activation", "init", f"layer {DEPTH // 2}", f"layer {DEPTH}", "stable", "saturated", "‖∇W₁‖"], rows)

    band = f"within [{BAND[0]}, {BAND[1]}]× of layer 1's at all {DEPTH} layers, every seed"
    ctx.check(in_band("relu", "he"), f"He init keeps ReLU activation std {band}")
    ctx.check(in_band("tanh", "xavier"), f"Xavier init (tanh gain 5/3) keeps tanh activation std {band}")
    ctx.check(all(in_band(a, "lsuv") for a in activations),
              f"LSUV keeps every activation's std {band} ({', '.join(activations)})")
    if "selu" in activations:
        ctx.check(in_band("selu", "he"), f"He init for SELU (LeCun, Var = 1/n_in) keeps SELU activation std {band}")

    xr = ratios("relu", "xavier")[:, -1]
    expected = 2 ** (-(DEPTH - 1) / 2)
    ctx.measure("Xavier + ReLU: std ratio at the last layer (theory (1/√2)^23)", f"{np.exp(np.log(xr).mean()):.3g} "
                f"(theory {expected:.3g})")
    ctx.check(np.all(xr < BAND[0]) and np.all(np.abs(np.log(xr / expected)) < np.log(3)),
              "mismatch: Xavier (gain 1) with ReLU vanishes, std × 1/√2 per layer: within 3× of (1/√2)^23 at the last "
              "layer", f"{np.exp(np.log(xr).mean()):.3g}")
    ctx.check(all(np.all(ratios(a, "normal σ=0.01")[:, -1] < 1e-3) for a in activations),
              "a too-small fixed std (0.01, i.e. 0.16/√n) vanishes for every activation: below 1e-3 of layer 1 "
              "at the last layer")
    big_relu = ratios("relu", "normal σ=0.3")[:, -1]
    ctx.check(np.all(big_relu > BAND[1] * 1e3), "a too-large fixed std (0.3, i.e. 4.8/√n) explodes with ReLU: more "
                                                "than 2000× layer 1 at the last layer", f"{big_relu.min():.3g}×")
    sat_big = np.mean([v["saturated"] for v in res["tanh", "normal σ=0.3"]])
    sat_x = np.mean([v["saturated"] for v in res["tanh", "xavier"]])
    g_big = np.mean([v["grad"] for v in res["tanh", "normal σ=0.3"]])
    g_x = np.mean([v["grad"] for v in res["tanh", "xavier"]])
    ctx.check(sat_big > 0.4 and sat_x < 0.1 and g_big > 100 * g_x,
              "with tanh the same too-large std cannot explode the (bounded) activations: it saturates them "
              "(> 40% of the last layer at |a| > 0.99, Xavier < 10%) and the first layer's gradient explodes "
              "(> 100× Xavier's)", f"saturated {sat_big:.2f} vs {sat_x:.2f}, ‖∇W₁‖ {g_big:.3g} vs {g_x:.3g}")
    glorot1 = ratios("tanh", "xavier gain 1")[:, -1]
    ctx.check(np.all(glorot1 < BAND[0]), "Glorot's original gain 1 with tanh drifts slowly (tanh shrinks what it "
                                         "passes): below 0.5× after 24 layers; torch's 5/3 gain fixes it",
              f"{np.exp(np.log(glorot1).mean()):.2f}×")

    fig, axes = plt.subplots(1, len(activations), figsize=(5.2 * len(activations), 4.3), sharey=True)
    layers = np.arange(1, DEPTH + 1)
    for ax, a in zip(axes, activations):
        for name, style in zip(INITS, ["-", "--", ":", "-.", "-", "--"]):
            r = np.exp(np.log(ratios(a, name)).mean(0))
            ax.semilogy(layers, np.clip(r, 1e-12, 1e12), style, lw=1.8, label=name)
        ax.axhspan(*BAND, color="tab:green", alpha=0.1)
        ax.set_title(a)
        ax.set_xlabel("hidden layer")
        ax.set_ylim(1e-12, 1e12)
    axes[0].set_ylabel("activation std / layer 1's")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"signal scale through {DEPTH} layers at initialization (green: within {BAND[0]}–{BAND[1]}×)")
    fig.tight_layout()
    ctx.figure(fig, "activation_std_by_depth")


LAB = Lab(id="1.7.2", title="Xavier, He and LSUV initialization",
          question="深度学习中常用的参数初始化方法有哪些（如Xavier初始化、He初始化等）？它们的核心设计思路是什么？各自适用于哪些激活函数场景？ — "
                   "Xavier, He and their design; which activations.",
          answer=ANSWER, run=run, uses="init, monitors")
