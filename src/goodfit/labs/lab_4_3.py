"""4.3 Gradient clipping: one huge-target outlier makes SGD diverge; norm, value, AGC and AutoClip each stabilize it."""
from __future__ import annotations

from functools import partial

import numpy as np
import torch

from goodfit.labs import Lab, LabContext

ANSWER = r"""
A single bad batch — an outlier target, a corrupted input, a rare hard example, a sharp cliff in
the loss surface (RNNs, deep nets at high LR) — can produce a gradient orders of magnitude larger
than usual. SGD turns it into a step η·g just as large: the weights jump into a region of high
curvature, the next gradients are larger still, and the loss explodes to NaN. **Gradient clipping**
bounds the step whatever the gradient, applied after backward and before the optimizer step:

- **by global norm** (Pascanu et al. 2013): g ← g · min(1, c/‖g‖₂) over all parameters together.
  Keeps the direction, bounds the length; the usual default (c ≈ 0.5–5, or about the typical norm).
- **by value**: each entry g_j ← clamp(g_j, −c, c). Bounds every coordinate but changes the direction;
  cheap, common in RL and older code.
- **adaptive (AGC**, Brock et al. 2021): per unit i (a row of a weight), G_i ← G_i · λ·max(‖W_i‖, ε)/‖G_i‖
  when ‖G_i‖/max(‖W_i‖, ε) > λ. Bounds the *relative* change of each unit's weights, so one threshold
  fits layers of every scale; designed for batch-norm-free nets at large batch.
- **AutoClip** (Seetharaman et al. 2020): clip the global norm at the p-th percentile of all norms seen
  so far (p ≈ 10). No threshold to tune; it adapts as gradients shrink. Its weak spot is the start: with
  little history, a spike in the first steps sets its own threshold.

Clipping treats the symptom: it keeps training alive and caps the damage an outlier can do, but the
outlier still pulls (a clipped step in its direction). Fix bad data, lower the LR, use a robust loss
(Huber) or warmup where the cause is known. Watch the **clipped fraction**: clipping a few percent
of the steps means it catches spikes; clipping nearly every step means it has become a smaller LR
(norm clipping then acts like normalized SGD), which is the intended regime of AutoClip with a low
percentile and of AGC, but a sign of a too-small threshold for norm and value clipping.

The lab: goodfit's diabetes-mlp model (2 × 64 ReLU) regressing the standardized target with SGD
(momentum 0.9, lr 0.03, cosine schedule) through `goodfit.Trainer`, with ONE training target
replaced by ±1000 (standard deviations). Every tenth batch or so contains it. The same run is
repeated with `Trainer(clip=...)` for each clipping method; the validation set is clean.
"""

LR, EPOCHS, BATCH = 0.03, 40, 32
OUTLIER = 1000.0       # the corrupted target, in standard deviations of y
CLIPS = {             # thresholds from the clean run's gradients: norm median ≈ 1 (p99 ≈ 2), max |g_j| p99 ≈ 0.8
    "norm (max_norm 2)": lambda: partial(_clip("clip_by_norm"), max_norm=2.0),
    "value (clip_value 1)": lambda: partial(_clip("clip_by_value"), clip_value=1.0),
    "AGC (λ 0.5)": lambda: partial(_clip("agc"), clipping=0.5),
    "AutoClip (p10)": lambda: _clip("AutoClip")(percentile=10.0),
}
GOOD = 1.0             # final val MSE below Var(y) = 1: better than predicting the mean
CLOSE = 1.3            # ... and within this factor of the clean run's


def _clip(name: str):
    from goodfit.optim import clipping

    return getattr(clipping, name)


class Spikes:
    """Per step: the pre-clip global gradient norm and whether the clip fired."""

    def __init__(self):
        self.norms, self.clipped = [], []

    def on_step_end(self, trainer, state, loss):
        from goodfit.optim.clipping import total_norm

        if state.grad_norm is not None:
            self.norms.append(state.grad_norm.detach().double().reshape(()))
            self.clipped.append(state.epoch_clipped[-1].reshape(()))
        else:  # no clip: the gradients are still in .grad until the next step's zero_grad
            self.norms.append(total_norm([p.grad for p in trainer.model.parameters() if p.grad is not None]).double())


def load():
    from goodfit.data import load_data
    from goodfit.recipe import load_recipe

    recipe = load_recipe("diabetes-mlp", ["model.dropout=0"])
    return recipe, load_data(recipe.data, recipe.task, 0)


def train(recipe, data, seed: int, clip, outlier: bool, epochs: int) -> dict:
    import goodfit
    from goodfit.data import TensorLoader
    from goodfit.models import build_model
    from goodfit.optim.optimizers import build_optimizer
    from goodfit.optim.schedules import warmup_cosine

    torch.manual_seed(seed)
    y = data.y_train.clone()
    if outlier:
        g = torch.Generator().manual_seed(seed)
        row = int(torch.randint(len(y), (1,), generator=g))
        y[row] = OUTLIER * (1.0 if torch.rand(1, generator=g) < 0.5 else -1.0)
    model = build_model(recipe.model, data.input_shape, data.num_outputs)
    opt = build_optimizer(model, recipe.optimizer.model_copy(update={"name": "sgd", "lr": LR, "momentum": 0.9,
                                                                      "weight_decay": 0.0}))
    spikes = Spikes()
    trainer = goodfit.Trainer(model=model, loss_fn=torch.nn.MSELoss(), optimizer=opt,
                              train_loader=TensorLoader(data.x_train, y, BATCH, seed=seed),
                              val_loader=TensorLoader(data.x_val, data.y_val, 1024, shuffle=False),
                              epochs=epochs, schedule=warmup_cosine, clip=clip, callbacks=[spikes])
    state = trainer.fit()
    h = state.history
    norms = torch.stack(spikes.norms).numpy() if spikes.norms else np.zeros(0)
    clipped = torch.stack(spikes.clipped).numpy() if spikes.clipped else np.zeros(0, bool)
    return {"diverged": state.stop_reason == "diverged", "val": h[-1]["val_loss"],
            "max_val": max(e["val_loss"] for e in h), "curve": [e["val_loss"] for e in h],
            "clipped": float(np.mean([e["clipped_fraction"] for e in h])) if "clipped_fraction" in h[0] else None,
            "norms": norms, "step_clipped": clipped, "epochs": len(h)}


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt

    torch.set_num_threads(1)
    seeds = (0, 1) if ctx.quick else tuple(range(6))
    epochs = EPOCHS
    recipe, data = load()
    clean = [train(recipe, data, s, None, False, epochs) for s in seeds]
    plain = [train(recipe, data, s, None, True, epochs) for s in seeds]
    clipped = {name: [train(recipe, data, s, make(), True, epochs) for s in seeds] for name, make in CLIPS.items()}
    clean_mean = float(np.mean([r["val"] for r in clean]))

    def fmt(v):
        return "NaN (diverged)" if not np.isfinite(v) else v

    rows = [["clean data, no clip", *[fmt(r["val"]) for r in clean], max(r["max_val"] for r in clean), "–"],
            ["outlier, no clip", *[fmt(r["val"]) for r in plain],
             np.nanmax([r["max_val"] for r in plain]) if any(np.isfinite(r["max_val"]) for r in plain) else "NaN", "–"]]
    for name, runs in clipped.items():
        rows.append([f"outlier, clip {name}", *[fmt(r["val"]) for r in runs], max(r["max_val"] for r in runs),
                     f"{np.mean([r['clipped'] for r in runs]):.1%}"])
    ctx.table(f"final validation MSE (standardized target; Var = 1) per seed, SGD lr {LR} momentum 0.9, {epochs} epochs; "
              "worst val MSE seen during training; mean clipped fraction of steps (Trainer history `clipped_fraction`)",
              ["run", *[f"seed {s}" for s in seeds], "worst val MSE during training", "clipped fraction"], rows)

    ctx.measure("clean run: final val MSE (mean)", clean_mean)
    blown = [r["diverged"] or not np.isfinite(r["val"]) or r["val"] > 10 * clean_mean for r in plain]
    ctx.measure("without clipping: runs that diverged to NaN", f"{sum(r['diverged'] for r in plain)} / {len(plain)}")
    ctx.check(all(blown), f"without clipping one outlier target of ±{OUTLIER:g}σ ruins every seed: the loss diverges to "
              "NaN or ends > 10× the clean run's val MSE",
              ", ".join("NaN" if r["diverged"] else f"{r['val']:.3g}" for r in plain))
    for name, runs in clipped.items():
        vals = np.array([r["val"] for r in runs])
        ok = bool(np.all(np.isfinite(vals)) and np.all(vals < GOOD) and vals.mean() <= CLOSE * clean_mean)
        ctx.measure(f"clip {name}: final val MSE (mean) / clipped fraction",
                    f"{vals.mean():.3f} / {np.mean([r['clipped'] for r in runs]):.1%}")
        ctx.check(ok, f"clipping by {name} stabilizes every seed: final val MSE finite and < {GOOD:g} (beats the mean), "
                  f"mean ≤ {CLOSE:g} × the clean run's", f"{', '.join(f'{v:.3f}' for v in vals)} vs clean {clean_mean:.3f}")
    spike_hits = []
    for runs in clipped.values():
        for r in runs:
            big = r["norms"] > 20 * np.median(r["norms"])
            spike_hits.append((int(big.sum()), int((big & r["step_clipped"]).sum())))
    caught = sum(h for _, h in spike_hits)
    total = sum(b for b, _ in spike_hits)
    ctx.measure("spike steps (pre-clip norm > 20× the run's median) clipped / total, all methods and seeds",
                f"{caught} / {total}")
    ctx.check(total > 0 and caught >= total - len(seeds),
              "every method clips the spikes: of all steps whose pre-clip gradient norm exceeds 20× the run's median, "
              "at most one per seed (AutoClip's first step, before it has a history) goes unclipped",
              f"{caught}/{total}")

    # ------------------------------------------------------------ figure
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 4.6))
    ep = np.arange(1, epochs + 1)
    ax1.semilogy(ep, clean[0]["curve"], "k--", lw=1, label="clean data, no clip")
    c = plain[0]["curve"]
    label = (f"outlier, no clip: NaN in epoch {plain[0]['epochs']}" if plain[0]["diverged"] else
             "outlier, no clip")
    ax1.semilogy(np.arange(1, len(c) + 1), c, "x-", color="tab:red", label=label)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:purple"]
    for (name, runs), col in zip(clipped.items(), colors):
        ax1.semilogy(ep, runs[0]["curve"], color=col, label=f"outlier, clip {name}")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("validation MSE (standardized)")
    ax1.set_title(f"seed {seeds[0]}: one ±{OUTLIER:g}σ target, SGD lr {LR}")
    ax1.legend(fontsize=7)
    for (name, runs), col in zip(clipped.items(), colors):
        n = runs[0]["norms"]
        ax2.semilogy(np.arange(1, len(n) + 1), n, ".", ms=2, color=col, label=f"pre-clip ‖g‖, clip {name}")
    n = clean[0]["norms"]
    ax2.semilogy(np.arange(1, len(n) + 1), n, ".", ms=2, color="k", label="‖g‖, clean data")
    ax2.set_xlabel("optimizer step")
    ax2.set_ylabel("global gradient norm before clipping")
    ax2.set_title("the spikes: steps whose batch holds the outlier")
    ax2.legend(fontsize=7, markerscale=4)
    ctx.figure(fig, "gradient_clipping")


LAB = Lab(id="4.3", title="Gradient clipping",
          question="梯度裁剪 — gradient clipping (by norm, by value, adaptive/AGC, AutoClip)",
          answer=ANSWER, run=run, uses="clipping (goodfit.optim.clipping)")
