"""1.8.6 The learning rate by stage: warmup rescues a high-LR start; decay lowers the final loss."""
from __future__ import annotations

import numpy as np
import torch

from goodfit.labs import Lab, LabContext

ANSWER = r"""
One learning rate does not fit the whole run, because what limits progress changes:

1. **Start (warmup).** At initialization the curvature is high and unknown, the gradients are large
   and badly scaled, normalization statistics and Adam's second-moment estimates v are not yet
   reliable (after one step v̂ = g², so every parameter moves by ≈ η at once, whatever its scale).
   A large LR here throws the weights into a bad region — exploding logits, dead ReLUs, a network
   that collapses to a constant prediction — from which it never returns. A linear **warmup**
   η_t = η·(t + 1)/T_w over the first T_w steps lets the early, violent updates happen at a small
   LR while the curvature falls and the statistics settle; then the large LR is safe.
2. **Middle (large LR).** Progress is limited by how far each step goes: a large LR makes fast
   progress and its gradient noise keeps SGD/Adam exploring (it prefers wide minima).
3. **End (decay).** Near a minimum the error is set by the noise: with a constant η the iterates
   bounce in a band whose size grows with η (for SGD the stationary loss excess ∝ η·σ²/B). Only
   lowering η shrinks the band: **decay** (step, cosine η_t = η_min + (η − η_min)(1 + cos πt/T)/2,
   linear, 1/√t) turns the exploration into convergence.
4. **Fine-tuning** a pretrained model uses a LR 10–100× below pretraining (often with warmup and
   smaller LRs for lower layers): the weights are already good and a large step would destroy the
   features (catastrophic forgetting).

So: warmup → the largest stable LR → decay to near zero. The lab shows the first and third stage on
an 8-layer MLP with layer norm on the digits (goodfit's digits-mlp recipe with `model.depth: 8,
model.width: 64, model.norm: layer`, Adam at lr 0.03): the same peak LR with and without
`schedule.warmup`, and cosine decay against a constant LR after the same warmup. Decay pays where the
final loss is limited by the LR's noise, as it is at this high LR; at a LR small enough that the
noise band lies below where the run ends, a short decay mainly slows progress.
"""

BASE = ["model.depth=8", "model.width=64", "model.norm=layer", "model.dropout=0", "optimizer.name=adam", "optimizer.weight_decay=0",
        "train.early_stopping.patience=null", "train.threads=1"]
LR = 0.03
WARMUP = 0.15          # fraction of the epochs
COLLAPSED = 2.0        # train loss at or above this: no better than chance (ln 10 = 2.30)


class StepLosses:
    """Records every optimizer step's training loss (kept on device; read once at the end)."""

    def __init__(self):
        self.losses = []

    def on_step_end(self, trainer, state, loss):
        self.losses.append(loss)

    def values(self) -> np.ndarray:
        return torch.stack(self.losses).double().numpy() if self.losses else np.zeros(0)


def dead_fraction(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Fraction of ReLU units that output 0 for every training input."""
    dead, total = 0, 0
    h = x
    with torch.no_grad():
        for layer in model:
            h = layer(h)
            if isinstance(layer, torch.nn.ReLU):
                alive = (h > 0).any(0)
                dead += int((~alive).sum())
                total += alive.numel()
    return dead / max(1, total)


def train(schedule: str, warmup: float, lr: float, epochs: int, seed: int) -> dict:
    from goodfit.recipe import load_recipe
    from goodfit.runner import build, resolve

    steps = StepLosses()
    recipe = resolve(load_recipe("digits-mlp", [*BASE, f"seed={seed}", f"train.epochs={epochs}", f"optimizer.lr={lr}",
                                                f"schedule.name={schedule}", f"schedule.warmup={warmup}"]))
    parts = build(recipe, progress=False, callbacks=[steps])  # the objects of a run, without a run directory
    state = parts.trainer.fit()
    model = parts.trainer.model.eval()
    x, y = parts.data.x_train, parts.data.y_train
    with torch.no_grad():
        train_loss = float(torch.nn.functional.cross_entropy(model(x), y))
    last = state.history[-1]
    return {"train_loss": train_loss, "val_loss": last.get("val_loss", float("nan")),
            "val_acc": last.get("val_accuracy", float("nan")), "steps": steps.values(), "dead": dead_fraction(model, x),
            "lr": [h["lr"] for h in state.history], "stop": state.stop_reason}


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt

    from goodfit.optim.schedules import SCHEDULES

    torch.set_num_threads(1)
    epochs = 10 if ctx.quick else 20
    seeds = (0, 1) if ctx.quick else (0, 1, 2)
    warm = WARMUP * epochs
    configs = {"cosine, no warmup": ("cosine", 0.0), f"cosine, warmup {warm:g} epochs": ("cosine", warm),
               f"constant, warmup {warm:g} epochs": ("constant", warm)}
    res = {name: [train(s, w, LR, epochs, seed) for seed in seeds] for name, (s, w) in configs.items()}
    no_wu, wu_cos, wu_const = (res[n] for n in configs)

    rows = []
    for name, runs in res.items():
        for seed, r in zip(seeds, runs):
            first = r["steps"][: len(r["steps"]) // epochs]
            rows.append([name, seed, float(first.max()), r["train_loss"], r["val_loss"], r["val_acc"], r["dead"]])
    ctx.table(f"8-layer MLP (width 64) + layer norm, Adam, peak lr {LR}, {epochs} epochs on the digits",
              ["schedule", "seed", "max step loss, epoch 1", "final train loss", "val loss", "val accuracy",
               "dead ReLU units"], rows)

    # ------------------------------------------------------------ warmup
    collapsed = all(r["train_loss"] >= COLLAPSED and r["val_acc"] <= 0.2 for r in no_wu)
    rescued = all(r["train_loss"] < 0.5 and r["val_acc"] >= 0.85 for r in wu_cos)
    ctx.measure("without warmup: final train loss (mean)", float(np.mean([r["train_loss"] for r in no_wu])))
    ctx.measure("with warmup: final train loss (mean)", float(np.mean([r["train_loss"] for r in wu_cos])))
    ctx.measure("val accuracy without / with warmup (mean)",
                f"{np.mean([r['val_acc'] for r in no_wu]):.3f} / {np.mean([r['val_acc'] for r in wu_cos]):.3f}")
    ctx.check(collapsed, f"without warmup the lr-{LR} start collapses on every seed: final train loss ≥ {COLLAPSED} "
              "(chance is ln 10 = 2.30) and val accuracy ≤ 20 %",
              ", ".join(f"{r['train_loss']:.2f}/{r['val_acc']:.2f}" for r in no_wu))
    ctx.check(rescued, f"the same peak LR after a {warm:g}-epoch linear warmup trains on every seed: train loss < 0.5, "
              "val accuracy ≥ 85 %", ", ".join(f"{r['train_loss']:.3f}/{r['val_acc']:.3f}" for r in wu_cos))
    dead_no, dead_wu = np.mean([r["dead"] for r in no_wu]), np.mean([r["dead"] for r in wu_cos])
    ctx.measure("dead ReLU units at the end, without / with warmup (mean)", f"{dead_no:.0%} / {dead_wu:.0%}")

    # ------------------------------------------------------------ decay
    ratio = [c["train_loss"] / d["train_loss"] for c, d in zip(wu_const, wu_cos)]
    better_val = all(d["val_loss"] < c["val_loss"] for c, d in zip(wu_const, wu_cos))
    ctx.measure("final train loss, constant / cosine (per seed)", " / ".join(f"{r:.1f}×" for r in ratio))
    ctx.check(min(ratio) > 1.5 and better_val, "after the same warmup, cosine decay ends with a lower loss than a "
              "constant LR on every seed: train loss lower by > 1.5×, val loss lower",
              ", ".join(f"{c['val_loss']:.3f} → {d['val_loss']:.3f}" for c, d in zip(wu_const, wu_cos)))

    # ------------------------------------------------------------ figure
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 4.6))
    total = len(no_wu[0]["steps"])
    per_epoch = total // epochs
    t = np.arange(total)
    for name, (s, w) in configs.items():
        ax1.plot(t, [LR * SCHEDULES[s](k, total, warmup=round(w * per_epoch)) for k in t], label=name)
    ax1.set_xlabel("optimizer step")
    ax1.set_ylabel("learning rate")
    ax1.set_title("the three schedules (same peak LR)")
    ax1.legend(fontsize=8)
    colors = ["tab:red", "tab:green", "tab:blue"]
    for (name, runs), col in zip(res.items(), colors):
        for i, r in enumerate(runs):
            ax2.semilogy(np.arange(len(r["steps"])), r["steps"], color=col, alpha=0.6, lw=0.7,
                         label=name if i == 0 else None)
    ax2.axhline(np.log(10), color="k", ls=":", lw=0.8, label="chance (ln 10)")
    ax2.set_xlabel("optimizer step")
    ax2.set_ylabel("training loss per step")
    ax2.set_title(f"training loss, all seeds (Adam lr {LR})")
    ax2.legend(fontsize=8)
    x = np.arange(len(seeds))
    for j, ((name, runs), col) in enumerate(zip(res.items(), colors)):
        ax3.bar(x + (j - 1) * 0.27, [r["val_loss"] for r in runs], 0.27, color=col, label=name)
    ax3.set_xticks(x, [f"seed {s}" for s in seeds])
    ax3.set_yscale("log")
    ax3.set_ylabel("final validation loss")
    ax3.set_title("warmup rescues the start, decay improves the end")
    ax3.legend(fontsize=8)
    ctx.figure(fig, "lr_by_stage")


LAB = Lab(id="1.8.6", title="The learning rate by training stage",
          question="不同训练阶段（如初始训练、收敛阶段、微调阶段）的学习率设置有何差异？为什么需要分阶段调整学习率？ — LR by stage; "
                   "why stage-wise.",
          answer=ANSWER, run=run, uses="schedules (goodfit.optim.schedules)")
