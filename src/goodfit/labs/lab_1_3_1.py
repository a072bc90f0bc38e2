"""1.3.1 Batch-size effects: steps and examples to a target, final val score, time per epoch, gradient noise."""
from __future__ import annotations

import shutil

import numpy as np

from goodfit.labs import Lab, LabContext

ANSWER = r"""
A step uses the mean gradient of B examples, G_B = (1/B) Σᵢ gᵢ: an unbiased estimate of the full
gradient G whose variance is **E|G_B − G|² = tr Σ / B** (Σ the per-example gradient covariance,
examples drawn independently). The batch size sets how much of each step is signal and how much
noise, and how many steps an epoch holds (⌈N/B⌉).

**Too small.**
- Noisy steps: the LR must stay small or the noise dominates; steps are many and each one is cheap,
  so fixed costs per step (kernel launches, the optimizer, Python) dominate and an epoch takes longer
  in wall-clock time; the hardware is underused.
- Batch statistics (batch norm) become unreliable below ~16 examples per device.
- But it is the most *sample*-efficient: it reaches a target after seeing the fewest examples, and
  its noise can help escape sharp regions.

**Too large.**
- Steps stop getting better once the noise is small next to the signal. McCandlish et al. (2018):
  the steps and examples needed to reach a loss follow S = S_min(1 + B_noise/B) and
  E = E_min(1 + B/B_noise), with the **noise scale B_noise ≈ tr Σ/|G|²**. Below B_noise, doubling B
  nearly halves the steps; above it, steps barely fall while the examples (compute) grow ~linearly.
- At a fixed epoch budget a large batch makes few updates and underfits, unless the LR grows with
  it (1.3.3); very large batches also hit the memory limit, and without retuning they tend to
  generalize worse (Keskar et al. 2017; Hoffer et al. 2017 and Goyal et al. 2017 close most of the
  gap with LR scaling, warm-up and longer training).

**In practice**: a batch near the critical batch B_crit ≈ B_noise (`goodfit batch-size` measures it),
no larger than what fits in memory, with the LR scaled when B changes.

**The lab.** digits-mlp (AdamW, LR 0.003 constant, no early stopping) trained at several batch sizes
for a fixed number of epochs, seeds averaged; after every step the val accuracy is checked until it
first reaches the target. The gradient variance at each B is measured at initialization.
"""

TARGET = 0.9          # val accuracy whose first crossing counts the steps
BASE = ["train.threads=1", "schedule.name=constant", "train.early_stopping.patience=null"]
SEEDS_QUICK, SEEDS_FULL = [0, 1], [0, 1, 2, 3]


class StepsToTarget:
    """Loop callback: checks val accuracy after every optimizer step until it first reaches `target`."""

    def __init__(self, target: float):
        self.target, self.step = target, None

    def on_step_end(self, trainer, state, loss) -> None:
        import torch

        if self.step is not None:
            return
        model, val = trainer.model, trainer.val_loader
        model.eval()
        with torch.no_grad():
            acc = (model(val.x).argmax(1) == val.y).float().mean().item()
        model.train()
        if acc >= self.target:
            self.step = state.step


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt
    import torch

    import goodfit
    from goodfit.optim.batch_size import full_gradient, gradient_noise_scale, gradient_stats
    from goodfit.recipe import load_recipe
    from goodfit.runner import build, resolve

    torch.set_num_threads(1)
    batches = [8, 32, 128, 512] if ctx.quick else [8, 16, 32, 64, 128, 256, 512]
    seeds = SEEDS_QUICK if ctx.quick else SEEDS_FULL
    epochs = 6  # a fixed, short budget: large batches get few updates in it
    runs_root = ctx.out / "runs"
    shutil.rmtree(runs_root, ignore_errors=True)  # this lab's own scratch folder

    rows, res = [], {}
    for b in batches:
        steps, accs, losses, times, per_epoch = [], [], [], [], None
        for seed in seeds:
            cb = StepsToTarget(TARGET)
            r = goodfit.run("digits-mlp", [*BASE, f"train.batch_size={b}", f"train.epochs={epochs}", f"seed={seed}"],
                            out=runs_root, progress=False, callbacks=[cb])
            steps.append(cb.step if cb.step is not None else np.inf)
            accs.append(r.history[-1]["val_accuracy"])
            losses.append(r.history[-1]["val_loss"])
            times.append(np.median([h["train_time"] for h in r.history]))
            per_epoch = r.history[0]["step"]
        # the median over seeds: a run that never reaches the target counts as ∞ without making the summary ∞
        res[b] = {"steps": float(np.median(steps)), "samples": float(np.median(steps)) * b, "acc": float(np.mean(accs)),
                  "loss": float(np.mean(losses)), "time": float(np.median(times)), "per_epoch": per_epoch,
                  "reached": int(np.isfinite(steps).sum())}

    # gradient noise at each B, at the recipe's initialization (eval mode, draws with replacement)
    parts = build(resolve(load_recipe("digits-mlp", BASE)), progress=False)
    model, loss_fn, x, y = parts.trainer.model, parts.trainer.loss_fn, parts.data.x_train, parts.data.y_train
    full = full_gradient(model, loss_fn, x, y)
    for b in batches:
        res[b]["variance"] = gradient_stats(model, loss_fn, x, y, b, 32, torch.Generator().manual_seed(b),
                                            full=full).variance
    noise = gradient_noise_scale(model, loss_fn, x, y, 32, 256, 64, torch.Generator().manual_seed(0))
    for b in batches:
        r = res[b]
        rows.append([b, r["per_epoch"], r["time"] * 1e3, "not reached" if not np.isfinite(r["steps"]) else r["steps"],
                     r["samples"], f"{r['reached']}/{len(seeds)}", r["acc"], r["loss"], r["variance"]])
    ctx.table(f"batch-size sweep, {epochs} epochs, {len(seeds)} seeds: steps median, accuracy and loss mean, "
              "epoch time median",
              ["B", "steps/epoch", "ms/epoch", f"steps to val acc {TARGET}", "examples to target", "runs reaching it",
               "final val acc", "final val loss", "grad variance E|G_B−G|² (init)"], rows)
    ctx.measure("noise scale B_simple = tr Σ/|G|² at initialization (B = 32, 256; 64 draws)", noise.b_simple)

    # McCandlish's S = S_min (1 + B_noise/B): least squares of steps on 1/B over the runs that reached the target
    reached = [b for b in batches if np.isfinite(res[b]["steps"])]
    slope, s_min = np.polyfit(1 / np.array(reached, float), [res[b]["steps"] for b in reached], 1)
    ctx.measure("fit of steps = S_min(1 + B_noise/B): S_min, B_noise", f"{s_min:.3g}, {slope / s_min:.3g}")

    lo, hi = batches[0], batches[-1]
    mid_lo, mid_hi = batches[batches.index(lo * 4)], batches[batches.index(hi // 4)]
    v = [res[b]["variance"] for b in batches]
    fit_slope = float(np.polyfit(np.log(batches), np.log(v), 1)[0])
    ctx.measure("log-log slope of gradient variance vs B", fit_slope)
    ctx.check(all(a > c for a, c in zip(v, v[1:])) and -1.2 <= fit_slope <= -0.8,
              "larger batches give less gradient noise: the variance falls at every step of the sweep, "
              "as ~1/B (log-log slope in [−1.2, −0.8])", f"slope {fit_slope:.2f}")
    first_gain = res[lo]["steps"] / res[mid_lo]["steps"]
    last_gain = res[mid_hi]["steps"] / res[hi]["steps"]
    ctx.check(first_gain >= 1.5 and last_gain < 1.5 and first_gain > 1.3 * last_gain,
              f"steps to val acc {TARGET} fall with B, with diminishing returns: B {lo}→{mid_lo} (4×) cuts them "
              f"≥ 1.5×, B {mid_hi}→{hi} (4×) < 1.5×, and the first cut is ≥ 1.3× the last (median over seeds; a run "
              "not reaching the target counts as ∞)",
              f"{first_gain:.2f}× and {last_gain:.2f}×")
    sample_ratio = res[hi]["samples"] / res[lo]["samples"]
    ctx.check(sample_ratio >= 4 and all(res[a]["samples"] <= res[c]["samples"] for a, c in zip(batches, batches[1:])),
              f"but the examples seen before reaching the target grow with B: B={hi} needs ≥ 4× those of B={lo}, "
              "and no larger batch needs fewer", f"{sample_ratio:.1f}×")
    accs = {b: res[b]["acc"] for b in batches}
    ctx.check(accs[hi] < min(a for b, a in accs.items() if b != hi) - 0.01,
              f"at a fixed budget of {epochs} epochs and the same LR, the largest batch ({hi}: {res[hi]['per_epoch']} "
              "steps per epoch) ends with the lowest val accuracy, by > 1 point",
              f"{accs[hi]:.3f} vs ≥ {min(a for b, a in accs.items() if b != hi):.3f}")
    ctx.log("time per epoch is reported, not asserted: wall-clock on a shared machine is noisy; small batches pay "
            f"a per-step cost {res[lo]['per_epoch']}× per epoch at B={lo} against {res[hi]['per_epoch']}× at B={hi}")

    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    bs = np.array(batches)
    axes[0].plot(bs, [res[b]["time"] * 1e3 for b in batches], "o-")
    axes[0].set(xscale="log", yscale="log", xlabel="batch size B", ylabel="ms per epoch (median)",
                title="time per epoch")
    ok = [b for b in batches if np.isfinite(res[b]["steps"])]
    axes[1].plot(ok, [res[b]["steps"] for b in ok], "o-", label="optimizer steps")
    axes[1].plot(ok, [res[b]["samples"] for b in ok], "s-", label="examples seen")
    grid = np.geomspace(batches[0], batches[-1], 50)
    axes[1].plot(grid, s_min * (1 + slope / s_min / grid), ":", color="grey",
                 label=f"S_min(1 + B_noise/B), B_noise={slope / s_min:.3g}")
    axes[1].set(xscale="log", yscale="log", xlabel="batch size B", title=f"to reach val accuracy {TARGET}")
    axes[1].legend(fontsize=8)
    axes[2].plot(bs, [res[b]["acc"] for b in batches], "o-")
    axes[2].set(xscale="log", xlabel="batch size B", ylabel="val accuracy", title=f"after {epochs} epochs")
    axes[3].plot(bs, v, "o-", label="measured E|G_B − G|²")
    axes[3].plot(bs, v[0] * batches[0] / bs, ":", color="grey", label="∝ 1/B")
    axes[3].set(xscale="log", yscale="log", xlabel="batch size B", title="gradient noise (at init)")
    axes[3].legend(fontsize=8)
    for ax in axes:
        ax.set_xticks(batches, [str(b) for b in batches], minor=False)
        ax.xaxis.set_minor_locator(plt.NullLocator())
    fig.tight_layout()
    ctx.figure(fig, "batch_size_effects")


LAB = Lab(id="1.3.1", title="Batch-size effects",
          question="批量大小（Batch Size）的大小对模型训练有哪些影响？过大或过小的批量大小分别会带来什么问题？ — Effects of "
                   "batch size; problems when too large or too small.",
          answer=ANSWER, run=run, uses="loader, noise scale")
