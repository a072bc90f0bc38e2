"""1.8.3 Every LR schedule's curve, each equal to its closed form and to torch's scheduler."""
from __future__ import annotations

import math

import numpy as np

from goodfit.labs import Lab, LabContext

ANSWER = r"""
A schedule sets the learning rate of step t as η_t = η_max · f(t), f a multiplier of the base LR
(goodfit: a pure function of the step, so resuming needs no scheduler state). T = total steps.

| schedule | f(t) | logic | use it when |
|---|---|---|---|
| constant | 1 | no decay | quick baselines, tuning other knobs, Adam on short runs; ends noisy |
| step | γ^⌊t/s⌋ | drop ×γ every s steps | classic CNN recipes (ResNet: ×0.1 at epochs 30, 60) when you know the budget |
| multistep | γ^#{m ≤ t} | drops at chosen milestones | the same, drops placed where the loss flattens |
| exponential | γ^t | smooth geometric decay | long runs, RNNs; one knob, but easy to decay too early |
| cosine | ½(1 + cos(π t/T)) (to min_lr) | slow start and end, fast middle | the default for a known budget (SGDR without restarts) |
| warm restarts (SGDR) | cosine over periods T₀, T₀·m, …, restarting at 1 | escapes sharp minima, snapshot ensembles | unknown budget, anytime checkpoints |
| linear warmup | (t+1)/W for t < W, then the schedule | small steps while statistics settle | Adam/AdamW, large batches, Transformers, deep nets without normalization |
| one-cycle | cosine up 1/25 → 1 over 30 %, down to 1/(25·10⁴); momentum 0.95 → 0.85 → 0.95 | a short high-LR phase regularizes, the long anneal converges | fixed short budgets ("super-convergence", Smith 2018) |
| polynomial | (1 − t/T)^p | p = 1 linear decay to 0 | BERT-style fine-tuning, segmentation (p = 0.9) |
| plateau | × factor after `patience` epochs without improvement of the monitored value | reacts to the validation curve, no budget needed | unknown length, noisy problems; needs a validation signal each epoch |
| cyclic (triangular) | base + (1 − base)·max(0, 1 − \|t/s − 2c + 1\|), c = ⌊1 + t/2s⌋ | bounces between base and max LR | LR range exploration, avoiding saddles; Smith 2017 |

Warmup composes with any of them: the first W steps ramp linearly, the schedule then runs on
t − W over T − W steps. Decaying schedules end with small steps, which averages out the
minibatch noise (the final loss of a constant LR sits on a noise floor ∝ η); the metric-driven
plateau schedule is the only stateful one (goodfit saves its state in every checkpoint).

**The lab** draws every schedule over the same T steps on one axis, checks each against its closed
form written out below at chosen steps and against torch's scheduler at every step (lr and, for
one-cycle, momentum). The plateau curve is **real**: a digits-mlp run with
`schedule: {name: reduce_on_plateau}`; torch's ReduceLROnPlateau, fed the run's validation losses,
must reproduce its LR epoch by epoch.
"""

BASE_LR = 0.1
EPOCHS, STEPS_PER_EPOCH = 15, 20           # the plateau run: digits-mlp, batch 64 -> 20 steps per epoch
T = EPOCHS * STEPS_PER_EPOCH
WARMUP = 30
EXACT = 1e-12                               # closed form vs goodfit, on multipliers
TORCH_REL = 1e-9                            # goodfit vs torch, relative to the base LR


def _closed_forms():
    """Independent closed forms f(t), written from the papers / torch docs."""
    cyc_s, cyc_base = 50, 0.1

    def restarts(t, t0=20, mult=2):
        i = int(math.floor(math.log2(t / t0 + 1)))  # period index: starts at t0·(2^i − 1)
        start, period = t0 * (2 ** i - 1), t0 * 2 ** i
        return 0.5 * (1 + math.cos(math.pi * (t - start) / period))

    def one_cycle(t, d=25.0, f=1e4, pct=0.3):
        a = pct * T - 1  # the peak step
        if t <= a:
            return 1 / d + (1 - 1 / d) * 0.5 * (1 - math.cos(math.pi * t / a))
        return 1 / (d * f) + (1 - 1 / (d * f)) * 0.5 * (1 + math.cos(math.pi * (t - a) / (T - 1 - a)))

    def cyclic(t):
        c = math.floor(1 + t / (2 * cyc_s))
        return cyc_base + (1 - cyc_base) * max(0.0, 1 - abs(t / cyc_s - 2 * c + 1))

    return {
        "constant": lambda t: 1.0,
        "step": lambda t: 0.5 ** (t // 60),
        "multistep": lambda t: 0.3 ** sum(t >= m for m in (100, 200, 250)),
        "exponential": lambda t: 0.99 ** t,
        "cosine": lambda t: 0.5 * (1 + math.cos(math.pi * t / T)),
        "warm restarts": restarts,
        "linear warmup + cosine": lambda t: (t + 1) / WARMUP if t < WARMUP else
        0.5 * (1 + math.cos(math.pi * (t - WARMUP) / (T - WARMUP))),
        "one-cycle": one_cycle,
        "polynomial (p=2)": lambda t: (1 - t / T) ** 2,
        "cyclic": cyclic,
    }


def _goodfit_schedules():
    from goodfit.optim.schedules import build_schedule

    def sched(name, warmup=0, **opts):
        fn = build_schedule(name, **opts)
        return lambda t: fn(t, T, warmup=warmup, min_lr=0.0)

    return {
        "constant": sched("constant"),
        "step": sched("step", step_size=60, gamma=0.5),
        "multistep": sched("multistep", milestones=[100, 200, 250], gamma=0.3),
        "exponential": sched("exponential", gamma=0.99),
        "cosine": sched("cosine"),
        "warm restarts": sched("cosine_restarts", t0=20, t_mult=2),
        "linear warmup + cosine": sched("cosine", warmup=WARMUP),
        "one-cycle": sched("one_cycle"),
        "polynomial (p=2)": sched("polynomial", power=2.0),
        "cyclic": sched("cyclic", base_lr=0.1, step_size_up=50),
    }


def _torch_curves():
    """Each torch scheduler's LR (and one-cycle's momentum) at steps 0..T-1, one .step() per step."""
    import torch
    from torch.optim import lr_scheduler as L

    makers = {
        "constant": lambda o: L.ConstantLR(o, factor=1.0, total_iters=T),
        "step": lambda o: L.StepLR(o, step_size=60, gamma=0.5),
        "multistep": lambda o: L.MultiStepLR(o, milestones=[100, 200, 250], gamma=0.3),
        "exponential": lambda o: L.ExponentialLR(o, gamma=0.99),
        "cosine": lambda o: L.CosineAnnealingLR(o, T_max=T),
        "warm restarts": lambda o: L.CosineAnnealingWarmRestarts(o, T_0=20, T_mult=2),
        "linear warmup + cosine": lambda o: L.SequentialLR(o, [
            L.LinearLR(o, start_factor=1 / WARMUP, end_factor=1.0, total_iters=WARMUP - 1),
            L.CosineAnnealingLR(o, T_max=T - WARMUP)], milestones=[WARMUP]),
        "one-cycle": lambda o: L.OneCycleLR(o, max_lr=BASE_LR, total_steps=T),
        "polynomial (p=2)": lambda o: L.PolynomialLR(o, total_iters=T, power=2.0),
        "cyclic": lambda o: L.CyclicLR(o, base_lr=0.1 * BASE_LR, max_lr=BASE_LR, step_size_up=50,
                                       mode="triangular", cycle_momentum=False),
    }
    curves, momentum = {}, []
    for name, make in makers.items():
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE_LR, momentum=0.9)
        sched = make(opt)
        lrs = []
        for t in range(T):
            lrs.append(opt.param_groups[0]["lr"])
            if name == "one-cycle":
                momentum.append(opt.param_groups[0]["momentum"])
            opt.step()
            if t < T - 1:
                sched.step()
        curves[name] = np.array(lrs)
    return curves, np.array(momentum)


class _StepLR:
    """Records the LR each optimizer step used."""

    def __init__(self):
        self.lrs = []

    def on_step_end(self, trainer, state, loss):
        self.lrs.append(trainer.optimizer.param_groups[0]["lr"])


def _plateau_run(ctx: LabContext):
    import goodfit

    rec = _StepLR()
    run = goodfit.run("digits-mlp", ["train.threads=1", f"train.epochs={EPOCHS}", "train.batch_size=64",
                                     "train.early_stopping.patience=null", "seed=0",
                                     "schedule={name: reduce_on_plateau, factor: 0.5, patience: 1, threshold: 0.02}"],
                      out=ctx.out / "runs", progress=False, callbacks=[rec])
    return run, np.array(rec.lrs)


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt
    import torch

    from goodfit.optim.schedules import one_cycle_momentum

    torch.set_num_threads(1)
    closed, ours = _closed_forms(), _goodfit_schedules()
    steps = np.arange(T)
    curves = {name: np.array([fn(int(t)) for t in steps]) for name, fn in ours.items()}

    # ------------------------------------------------------------ closed forms at chosen steps
    chosen = [0, 30, 137, T - 1] if ctx.quick else [0, 1, 29, 30, 59, 60, 99, 100, 119, 137, 150, 200, 250, 280, T - 1]
    worst_closed, rows = 0.0, []
    for name, f in closed.items():
        gaps = [abs(curves[name][t] - f(t)) for t in chosen]
        worst_closed = max(worst_closed, *gaps)
        rows.append([name, *[float(curves[name][t]) for t in (0, 60, 137, T - 1)], f"{max(gaps):.1e}"])
    ctx.table(f"multiplier f(t) at chosen steps (T = {T}), and max |goodfit − closed form| at {len(chosen)} steps",
              ["schedule", "t=0", "t=60", "t=137", f"t={T - 1}", "max |diff|"], rows)
    ctx.check(worst_closed <= EXACT,
              f"every schedule equals its closed form at the chosen steps (|diff| ≤ {EXACT:g})",
              f"max |diff| {worst_closed:.1e}")

    # ------------------------------------------------------------ torch's schedulers, every step
    ref, ref_momentum = _torch_curves()
    gaps = {name: float(np.max(np.abs(BASE_LR * curves[name] - ref[name]))) / BASE_LR for name in curves}
    momentum = np.array([one_cycle_momentum(int(t), T) for t in steps])
    gaps["one-cycle momentum"] = float(np.max(np.abs(momentum - ref_momentum)))
    worst_torch = max(gaps.values())
    ctx.table("max |goodfit − torch| / base LR over all steps", ["schedule", "torch scheduler", "max rel diff"],
              [[n, {"constant": "ConstantLR(1)", "step": "StepLR", "multistep": "MultiStepLR",
                    "exponential": "ExponentialLR", "cosine": "CosineAnnealingLR",
                    "warm restarts": "CosineAnnealingWarmRestarts",
                    "linear warmup + cosine": "SequentialLR(LinearLR, CosineAnnealingLR)",
                    "one-cycle": "OneCycleLR", "one-cycle momentum": "OneCycleLR (momentum)",
                    "polynomial (p=2)": "PolynomialLR", "cyclic": "CyclicLR(triangular)"}[n], f"{g:.1e}"]
               for n, g in gaps.items()])
    ctx.check(worst_torch <= TORCH_REL, f"every schedule equals torch's scheduler at all {T} steps, one-cycle's "
              f"momentum included (relative |diff| ≤ {TORCH_REL:g})", f"max {worst_torch:.1e}")

    # ------------------------------------------------------------ plateau: a real run, replayed into torch
    plateau_run, plateau_lrs = _plateau_run(ctx)
    lr0 = plateau_run.recipe.optimizer.lr
    val = [h["val_loss"] for h in plateau_run.history]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr0)
    torch_plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=1, threshold=0.02)
    replay = []
    for v in val:
        replay.append(opt.param_groups[0]["lr"])
        torch_plateau.step(v)
    per_epoch = plateau_lrs.reshape(EPOCHS, STEPS_PER_EPOCH)
    held = bool(np.all(per_epoch == per_epoch[:, :1]))
    plateau_gap = float(np.max(np.abs(per_epoch[:, 0] - np.array(replay)))) / lr0
    mult = per_epoch[:, 0] / lr0
    reductions = int(np.sum(np.diff(mult) < 0))
    powers = bool(np.allclose(mult, 0.5 ** np.round(np.log(mult) / np.log(0.5)), rtol=1e-12))
    ctx.measure("plateau run: val loss per epoch", " ".join(f"{v:.3f}" for v in val))
    ctx.measure("plateau run: LR multiplier per epoch", " ".join(f"{m:g}" for m in mult))
    ctx.check(reductions >= 1 and held and powers,
              "plateau (real digits-mlp run, val loss monitored): the LR is held within each epoch, drops only by "
              "factor 0.5 after the val loss stops improving (patience 1, threshold 2 %)",
              f"{reductions} reduction(s)")
    ctx.check(plateau_gap <= TORCH_REL, "torch's ReduceLROnPlateau fed the run's val losses gives the run's LR "
              f"every epoch (relative |diff| ≤ {TORCH_REL:g})", f"{plateau_gap:.1e}")
    curves["plateau (real run)"] = plateau_lrs / lr0

    # ------------------------------------------------------------ figures
    fig, ax = plt.subplots(figsize=(11, 5.5))
    colors = plt.cm.tab20(np.linspace(0, 1, len(curves)))
    for (name, c), color in zip(curves.items(), colors):
        ax.plot(steps, c, lw=1.8 if "plateau" in name else 1.3, color=color, label=name)
    ax.set_xlabel(f"optimizer step (T = {T}; the plateau run: {EPOCHS} epochs × {STEPS_PER_EPOCH} steps)")
    ax.set_ylabel("LR multiplier f(t) = η_t / η_max")
    ax.set_title("every schedule on one axis")
    ax.legend(fontsize=8, ncol=2, loc="upper right")
    ctx.figure(fig, "all_schedules")

    fig, axes = plt.subplots(3, 4, figsize=(15, 9), sharex=True)
    for ax, (name, c) in zip(axes.flat, curves.items()):
        ax.plot(steps, c, lw=1.4, label="goodfit")
        if name in ref:
            ax.plot(steps[::10], ref[name][::10] / BASE_LR, "x", ms=4, color="k", label="torch")
            ax.plot(chosen, [closed[name](t) for t in chosen], "o", mfc="none", color="tab:red", label="closed form")
        else:
            ax.plot(np.arange(EPOCHS) * STEPS_PER_EPOCH, np.array(replay) / lr0, "x", color="k",
                    label="torch ReduceLROnPlateau")
            ax2 = ax.twinx()
            ax2.plot((np.arange(EPOCHS) + 1) * STEPS_PER_EPOCH, val, ".:", color="tab:green")
            ax2.set_ylabel("val loss", color="tab:green", fontsize=8)
        if name == "one-cycle":
            ax.plot(steps, momentum, color="tab:purple", lw=1, label="momentum")
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=6)
    axes.flat[-1].axis("off")
    fig.tight_layout()
    ctx.figure(fig, "schedules_vs_torch")


LAB = Lab(id="1.8.3", title="LR schedules: logic and uses",
          question="常用的学习率调度策略有哪些（如恒定学习率、阶梯下降、余弦退火、自适应学习率等）？请分别说明其核心逻辑和适用场景。"
                   " — Schedules: logic and uses.",
          answer=ANSWER, run=run, uses="schedules")
