"""1.7.1 Why initialize randomly: constant init keeps a layer's hidden units identical forever."""
from __future__ import annotations

import numpy as np

from goodfit.labs import Lab, LabContext

ANSWER = r"""
Initialization sets where gradient descent starts, and that start decides two things: whether the
signal and its gradient keep a usable scale through depth (1.7.2), and whether the hidden units can
become different from each other at all.

**Symmetry.** Take a layer whose units all start with the same incoming weights w and bias b, and
whose outgoing weights are also equal. Every unit then computes the same activation h_i = h, and
receives the same gradient: ∂L/∂w_i = δ_i·x with δ_i = (Σ_k v_ki δ_k)·φ'(z_i) identical for all i.
Identical gradients give identical updates (SGD, momentum and Adam all act elementwise on
identical numbers), so after any number of steps the units are still copies of each other: a layer
of width n behaves like a layer of width 1, however long it trains. Random initialization breaks
the symmetry: each unit starts somewhere else, receives a different gradient, and learns a
different feature.

**All zeros** is worse: with ReLU (φ'(0) = 0 in PyTorch) and zero outgoing weights every hidden
gradient is exactly zero, so only the output bias learns: the net predicts class frequencies.
(Zero *biases* are fine and usual; the weights must be random.)

**Anything that treats units differently breaks symmetry too**, e.g. dropout's random masks; but
relying on it wastes capacity and training time. Random init with the right scale (Xavier / He,
1.7.2) both breaks the symmetry and keeps the signal in range.

**The lab** trains the same MLP on digits three ways with Adam (no dropout): constant weights 0.05
(and biases 0.05), all zeros, and He's random init, then compares each hidden layer's rows of W
(max |W_i − W_1| and the number of singular values above 10⁻³ × the largest, its effective rank),
and the validation accuracy. A fourth run adds dropout to the constant init.
"""


def _rows(model):
    """(max |W_i − W_1| over rows, effective rank, bias spread) of each hidden Linear layer."""
    import torch
    from torch import nn

    out = []
    for layer in [m for m in model if isinstance(m, nn.Linear)][:-1]:
        w = layer.weight.detach()
        s = torch.linalg.svdvals(w)
        rank = int((s > 1e-3 * s[0]).sum()) if s[0] > 0 else 0
        out.append(((w - w[0]).abs().max().item(), rank, (layer.bias - layer.bias[0]).abs().max().item(), w))
    return out


def run(ctx: LabContext) -> None:
    import shutil

    import matplotlib.pyplot as plt
    import torch

    import goodfit

    torch.set_num_threads(1)
    width, epochs = (32, 8) if ctx.quick else (64, 20)
    root = ctx.out / "runs"
    shutil.rmtree(root, ignore_errors=True)
    setups = {"constant 0.05": ("constant(value=0.05)", 0.0), "zeros": ("zeros", 0.0), "random (He)": ("he", 0.0),
              "constant 0.05 + dropout 0.2": ("constant(value=0.05)", 0.2)}
    ctx.log(f"digits-mlp: 64 → {width} → {width} → 10, ReLU, Adam lr 0.003, {epochs} epochs, batch 64")
    res = {}
    for name, (spec, p) in setups.items():
        r = goodfit.run("digits-mlp", [f"model.init={spec}", f"model.dropout={p}", f"model.width={width}",
                                       f"train.epochs={epochs}", "train.early_stopping.patience=null",
                                       "train.threads=1", "doctor.enabled=false"], out=root, progress=False)
        res[name] = {"layers": _rows(r.model), "val_acc": r.history[-1]["val_accuracy"]}
    rows = [[name, i + 1, spread, rank, bspread, res[name]["val_acc"]]
            for name, r in res.items() for i, (spread, rank, bspread, _) in enumerate(r["layers"])]
    ctx.table(f"after training: per hidden layer, max |W_i − W_1| over its {width} rows, effective rank, "
              "max |b_i − b_1|, and the net's val accuracy",
              ["init", "layer", "max |W_i − W_1|", "eff. rank", "max |b_i − b_1|", "val acc"], rows)

    const, zeros, rand, drop = (res[k] for k in setups)
    ctx.check(all(s == 0.0 and b == 0.0 and rank == 1 for s, rank, b, _ in const["layers"]),
              "constant init: after training every hidden unit of a layer is still an exact copy of the first "
              "(max |W_i − W_1| = 0 and max |b_i − b_1| = 0 to the last bit; effective rank 1)")
    ctx.check(all(float(w.abs().max()) == 0.0 for *_, w in zeros["layers"]) and zeros["val_acc"] < 0.15,
              "all-zero init: hidden weights never move from 0 (every hidden gradient is exactly 0) and the net "
              "only learns class frequencies (val accuracy < 0.15)", f"val acc {zeros['val_acc']:.3f}")
    ctx.check(all(s > 0.1 and rank >= 0.9 * width for s, rank, _, _ in rand["layers"]) and rand["val_acc"] > 0.9,
              f"random init breaks the symmetry: rows differ, effective rank ≥ 90% of {width}, val accuracy > 0.9",
              f"ranks {[r for _, r, _, _ in rand['layers']]}, val acc {rand['val_acc']:.3f}")
    ctx.check(const["val_acc"] < rand["val_acc"] - 0.4,
              "the symmetric net is as weak as a width-1 net: its val accuracy trails random init's by more than 0.4",
              f"{const['val_acc']:.3f} vs {rand['val_acc']:.3f}")
    ctx.check(all(s > 1e-3 and rank > 1 for s, rank, _, _ in drop["layers"]),
              "dropout's per-unit random masks also break the symmetry (rows differ by more than 1e-3 after training, "
              "effective rank > 1)", f"ranks {[r for _, r, _, _ in drop['layers']]}")

    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    for ax, name in zip(axes[:3], ["constant 0.05", "random (He)", "constant 0.05 + dropout 0.2"]):
        w = res[name]["layers"][0][3].numpy()
        lim = np.abs(w).max() or 1.0
        ax.imshow(w, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
        ax.set_title(f"{name}: W of hidden layer 1 after training", fontsize=9)
        ax.set_xlabel("input pixel")
        ax.set_ylabel("hidden unit")
    names = list(res)
    axes[3].bar(range(len(names)), [res[n]["val_acc"] for n in names], color=["tab:red", "tab:gray", "tab:green",
                                                                               "tab:orange"])
    axes[3].set_xticks(range(len(names)), names, rotation=25, fontsize=8, ha="right")
    axes[3].set_ylabel("val accuracy")
    axes[3].set_title("what the symmetry costs")
    fig.tight_layout()
    ctx.figure(fig, "symmetry")


LAB = Lab(id="1.7.1", title="Why initialization must be random",
          question="模型参数初始化的核心目的是什么？为什么随机初始化参数时不能全部初始化为0或相同值？ — Why initialize carefully; "
                   "why not zeros/constants.",
          answer=ANSWER, run=run, uses="init")
