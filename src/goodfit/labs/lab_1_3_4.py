"""1.3.4 LR schedules and when to use each: all on one axis, and the same budget compared on digits."""
from __future__ import annotations

import numpy as np

from goodfit.labs import Lab, LabContext

ANSWER = r"""
The learning rate trades speed for precision: a large η moves fast and its minibatch noise helps
explore, but SGD with a constant η only reaches a noise ball whose size grows with η (the loss
keeps fluctuating ∝ η·σ²); shrinking η late removes that floor. A schedule η_t = η_max·f(t)
spends the budget on both: high early, small at the end.

- **Constant**: baseline and for tuning other knobs; fine for short Adam runs, but the final
  model sits on the noise floor of its η (its last epoch is a random draw from that ball).
- **Step / multistep** (×γ at milestones, e.g. ×0.1 at 50 % and 75 %): the classic ImageNet
  recipe; each drop gives a visible improvement. Needs the budget known and the milestones tuned.
- **Exponential** (γ^t): smooth, one knob; decays too early or too late unless tuned to the budget.
- **Cosine** (½(1 + cos πt/T)): the default when the budget is known; no milestones, long time
  near η_max, gentle landing. **With linear warmup** for Adam(W), large batches, Transformers,
  deep nets without normalization. **Warm restarts** (SGDR) when the budget is open-ended or you
  want snapshots to ensemble.
- **One-cycle** (warm up to η_max over ~30 %, anneal to ≈0, momentum cycled inversely): short
  fixed budgets; tolerates a higher η_max, which regularizes ("super-convergence").
- **Reduce-on-plateau** (×factor when the validation metric stalls for `patience` epochs): when
  the length of training is unknown or the curve is irregular; it reacts to the data instead of a
  clock, at the price of a validation pass per epoch and a patience delay.
- **Cyclic** (triangular between base and max): LR range tests, avoiding saddles; it ends where
  its cycle ends, so put a low point (or a decay) at the end of the budget.
- **Polynomial / linear decay to 0**: fine-tuning pretrained models (BERT), segmentation (p = 0.9).

Rule of thumb: known budget → cosine (+ warmup for Adam / big batches) or one-cycle; unknown
budget → plateau or warm restarts; always end with a small LR.

**The lab** trains digits-mlp (AdamW, η_max = 0.03, a fast LR, 10× the recipe's; batch 64) for
the same number of epochs under each schedule, over several seeds (each seed also re-draws the
split), and compares the final validation loss and accuracy, plus how much the validation loss
still moves over the last epochs.
"""

LR = 0.03
STEPS_PER_EPOCH = 20  # digits-mlp, batch 64
# a decaying schedule's mean final val loss must be below MARGIN × constant's; measured over seeds 0-3:
# step 0.47, cosine 0.44, one-cycle 0.33, plateau 0.51 (per seed, every decaying run ended below constant)
MARGIN = 0.75
DECAYING = ("step", "cosine", "one_cycle")


def _schedules(epochs: int, quick: bool) -> dict[str, str]:
    s = {
        "constant": "{name: constant}",
        "step": f"{{name: step, step_size: {max(1, epochs // 3)}, gamma: 0.3, interval: epoch}}",
        "cosine": "{name: cosine}",
        "one_cycle": "{name: one_cycle}",
        "plateau": "{name: reduce_on_plateau, factor: 0.3, patience: 1}",
    }
    if not quick:  # quick mode keeps the schedules the claims are about
        s["cyclic"] = f"{{name: cyclic, base_lr: 0.1, step_size_up: {epochs * STEPS_PER_EPOCH // 6}}}"
        s["exponential"] = f"{{name: exponential, gamma: {0.01 ** (1 / epochs):.6f}, interval: epoch}}"
        s["warmup_cosine"] = "{name: cosine, warmup: 1}"
    return s


class _LRs:
    def __init__(self):
        self.lrs = []

    def on_step_end(self, trainer, state, loss):
        self.lrs.append(trainer.optimizer.param_groups[0]["lr"])


def run(ctx: LabContext) -> None:
    import shutil

    import matplotlib.pyplot as plt
    import torch

    import goodfit

    torch.set_num_threads(1)
    epochs, seeds = (10, 2) if ctx.quick else (10, 4)
    schedules = _schedules(epochs, ctx.quick)
    root = ctx.out / "runs"
    shutil.rmtree(root, ignore_errors=True)
    ctx.log(f"digits-mlp, AdamW η_max = {LR}, {epochs} epochs × {STEPS_PER_EPOCH} steps, seeds 0..{seeds - 1}, "
            "no early stopping; 'final' = the last epoch")

    curves, lrs = {}, {}
    for name, sched in schedules.items():
        for seed in range(seeds):
            rec = _LRs()
            r = goodfit.run("digits-mlp", ["train.threads=1", f"train.epochs={epochs}", "train.batch_size=64",
                                           "train.early_stopping.patience=null", f"optimizer.lr={LR}",
                                           f"schedule={sched}", f"seed={seed}"],
                            out=root, progress=False, callbacks=[rec])
            curves.setdefault(name, []).append([[h["val_loss"], h["val_accuracy"]] for h in r.history])
            if seed == 0:
                lrs[name] = np.array(rec.lrs) / LR
    curves = {k: np.array(v) for k, v in curves.items()}  # (seeds, epochs, [loss, acc])
    final = {k: v[:, -1, 0] for k, v in curves.items()}
    wobble = {k: np.abs(np.diff(v[:, -4:, 0], axis=1)).mean() for k, v in curves.items()}  # last 3 epoch-to-epoch moves
    rows = [[k, float(final[k].mean()), " ".join(f"{x:.3f}" for x in final[k]), float(curves[k][:, -1, 1].mean()),
             float(curves[k][:, :, 0].min(axis=1).mean()), float(wobble[k])] for k in schedules]
    ctx.table(f"same budget ({epochs} epochs): final val loss (mean, per seed), final val accuracy, best val loss "
              "on the way, mean |Δ val loss| over the last 3 epochs",
              ["schedule", "final val loss", "per seed", "final val acc", "best val loss", "last-epochs |Δ|"], rows)

    const = final["constant"].mean()
    ratios = {k: final[k].mean() / const for k in DECAYING}
    ctx.measure("final val loss relative to constant LR (mean over seeds)",
                ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    ctx.check(all(r < MARGIN for r in ratios.values()),
              f"at the same budget, each decaying schedule (step, cosine, one-cycle) ends with a mean final val loss "
              f"below {MARGIN} × constant LR's (mean over {seeds} seeds)",
              ", ".join(f"{k} {v:.2f}×" for k, v in ratios.items()))
    settled = {k: wobble[k] / wobble["constant"] for k in ("cosine", "one_cycle")}
    ctx.check(all(v < 0.5 for v in settled.values()),
              "schedules that anneal to ≈0 (cosine, one-cycle) have settled: their val loss moves less than half as "
              "much as constant LR's over the last 3 epochs",
              ", ".join(f"{k} {v:.2f}×" for k, v in settled.items()))
    plateau_cuts = int(np.sum(np.diff(lrs["plateau"]) < 0))
    ctx.check(plateau_cuts >= 1 and final["plateau"].mean() < const,
              "reduce-on-plateau cut the LR from the val loss alone (no budget given) and ends below constant LR",
              f"{plateau_cuts} cut(s) in seed 0, {final['plateau'].mean() / const:.2f}×")

    # ------------------------------------------------------------ figure
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 4.8))
    steps = np.arange(epochs * STEPS_PER_EPOCH)
    for name, lr in lrs.items():
        ax1.plot(steps / STEPS_PER_EPOCH, lr, lw=1.5, label=name)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("LR / η_max")
    ax1.set_title("the schedules (seed 0's runs; plateau reacted to its val loss)")
    ax1.legend(fontsize=8)
    ep = np.arange(1, epochs + 1)
    for name, c in curves.items():
        ax2.plot(ep, c[:, :, 0].mean(0), lw=1.5, label=name)
    ax2.set_ylim(0, min(0.6, float(max(c[:, 1:, 0].mean(0).max() for c in curves.values())) * 1.1))
    ax2.set_xlabel("epoch")
    ax2.set_ylabel(f"val loss (mean of {seeds} seeds)")
    ax2.set_title("validation loss")
    names = list(schedules)
    ax3.bar(range(len(names)), [final[n].mean() for n in names], yerr=[final[n].std() for n in names], capsize=3,
            color=["tab:gray" if n == "constant" else "tab:blue" for n in names])
    ax3.set_xticks(range(len(names)), names, rotation=30, fontsize=8)
    ax3.set_ylabel("final val loss (mean ± sd)")
    ax3.set_title(f"same budget: {epochs} epochs")
    fig.tight_layout()
    ctx.figure(fig, "schedules_same_budget")


LAB = Lab(id="1.3.4", title="LR schedules and when to use each",
          question="常用的学习率调整策略有哪些（如余弦退火、阶梯下降等）？各自适用于什么场景？ — LR schedules and when to use each.",
          answer=ANSWER, run=run, uses="schedules")
