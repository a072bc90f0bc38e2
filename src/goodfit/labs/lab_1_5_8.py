"""1.5.8 Do normalization methods regularize: the train/val gap with BN vs the sample-wise LN/GN vs none on the same
small training set; BN's batch noise itself, turned up with ghost batches; BN's gap with eval- vs train-mode
statistics."""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from goodfit.labs import Lab, LabContext

ANSWER = r"""
A little, and in the strict sense only through BN's batch noise, which on small data is hard to see.

- **Batch-dependent norms (BN) inject noise.** In training, sample i is normalized with the mean and variance of
  its random mini-batch: x̂ᵢ = (xᵢ − μ_B)/σ_B with μ_B = μ + O(σ/√m), σ_B = σ(1 + O(1/√m)) (m values per channel).
  Each forward pass therefore shifts and scales every activation by an amount that depends on the batch-mates —
  data-dependent noise, like dropout's, which is absent at test time (running statistics). It is the only
  dropout-like (noise) regularizer a normalization layer contains (Ioffe & Szegedy 2015; Luo et al. 2019 read it
  as an implicit penalty on γ); it shrinks as 1/√m, so it fades with large batches (ghost batch
  norm, Hoffer et al. 2017, computes BN's statistics over small slices of the batch to keep it).
- **Sample-wise norms (LN, GN, IN) have no batch noise:** a sample's output is the same whatever its batch-mates;
  they are deterministic functions, so any effect on the gap must come from optimization and the function class
  (scale invariance, a smoother landscape — which also apply to BN, 1.5.2).
- **Every normalization changes optimization:** faster, better-conditioned training often lands in flatter,
  better-generalizing solutions, and with weight decay the scale invariance of the weights before a norm gives a
  growing effective learning rate (van Laarhoven 2017). So "the gap is smaller with a norm" is not by itself
  evidence of regularization — the controlled comparison is batch-dependent vs sample-wise noise-free norms, and
  BN at different noise levels with everything else fixed.

**Measuring the gap with BN.** Score both splits in eval mode. With train-mode (batch) statistics every loss
carries the batch noise, and the training loss the loop logs is also averaged over an epoch of moving weights:
both overstate the training loss of the model you deploy.

**What this lab finds on digits** (small data, a small CNN): every normalization leaves a smaller final gap than
none, but BN's gap is no smaller than LN's/GN's beyond ±0.04, and turning BN's noise up (ghost batches of 2) does
not narrow it while it slows fitting and raises the val loss. So here the gap a norm closes comes from what all
norms share (easier optimization), not from BN's batch noise, which is real but too weak to show. Its
regularizing effect is reported on larger vision models and datasets, and it depends on the batch size; treat it as
a side effect, not as a regularizer to rely on.

**The lab.** goodfit's digits-cnn (16 → 16 → 32 channels, no dropout, no weight decay) trained with `goodfit.run`
on 300 training digits, `model.norm` = batch | layer | group | none, with the same AdamW LR, epochs, batch size 32
and seeds; train and validation loss in eval mode after every epoch (a callback), compared after the last epoch
(no early stopping) and where the training loss reaches 0.1. A ghost-batch control: the BN net with BN statistics
over slices of 2 samples within each batch of 32 (far more noise, everything else identical). BN's batch noise
measured directly (a training digit's logits among random batch-mates, per norm), and the BN nets scored with
eval- vs train-mode statistics.
"""

# measured (300 digits, AdamW 1e-2, 15 epochs, batch 32, seeds 0-9): final val − train loss (eval mode) BN 0.126,
# LN 0.138, GN 0.157, none 0.192, BN with ghost batches of 2 0.139 (final val loss 0.189 vs BN 0.134); at equal
# training loss 0.1: BN 0.172, LN 0.158, GN 0.161, none 0.190, ghost 0.137, each ± 0.01-0.02 (standard error).
SUBSET = 300
BATCH = 32
LR = 0.01
GHOST = 2            # the ghost-batch control's statistics slice (samples)
LEVEL = 0.1          # "equal fit": the gaps are also reported where the eval-mode training loss first reaches this
NORMS = ("batch", "layer", "group", "none")
NAMES = {"batch": "BN", "layer": "LN", "group": "GN", "none": "none", "ghost": f"BN, ghost batches of {GHOST}"}
SAME_TOL = 0.04      # "no clear difference": BN's mean final gap within this of the best sample-wise norm's
GHOST_TOL = 0.02     # more batch noise "narrows the gap" only if the ghost BN's mean final gap is this much below BN's
MODE_TOL = 0.03      # train- vs eval-mode statistics: the gap moves by less than this


class _Ghost(nn.Module):
    """Ghost batch norm (Hoffer et al. 2017): in training, each slice of `size` samples is normalized with its own
    statistics; the running statistics are still updated once per batch from the whole batch, as plain BN does, so
    that evaluation is as accurate as plain BN's and only the training noise differs."""

    def __init__(self, bn: nn.BatchNorm2d, size: int):
        super().__init__()
        self.bn, self.size = bn, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or len(x) <= self.size:
            return self.bn(x)
        with torch.no_grad():
            self.bn(x)  # the running statistics' update, from the whole batch
        return torch.cat([F.batch_norm(part, None, None, self.bn.weight, self.bn.bias, training=True, eps=self.bn.eps)
                          for part in x.split(self.size)])


class _GhostSwap:
    """goodfit callback: replace every BatchNorm2d of the model by a ghost batch norm before the first step (the
    parameters stay the same objects, so the optimizer keeps training them)."""

    def __init__(self, size: int):
        self.size = size

    def on_fit_start(self, trainer, state) -> None:
        model = trainer.model
        for i, m in enumerate(model):
            if isinstance(m, nn.BatchNorm2d):
                model[i] = _Ghost(m, self.size)


class _Curve:
    """goodfit callback: eval-mode training and validation loss after every epoch."""

    def __init__(self):
        self.train: list[float] = []
        self.val: list[float] = []

    def on_fit_start(self, trainer, state) -> None:
        self.splits = (trainer.train_loader.x, trainer.train_loader.y, trainer.val_loader.x, trainer.val_loader.y)

    def on_epoch_end(self, trainer, state, summary) -> None:
        x, y, xv, yv = self.splits
        model = trainer.model.eval()
        with torch.no_grad():
            self.train.append(F.cross_entropy(model(x), y).item())
            self.val.append(F.cross_entropy(model(xv), yv).item())
        model.train()


def _matched_gap(curve: _Curve, level: float) -> float:
    """val − train loss where the eval-mode training loss first reaches `level` (log-linear interpolation between
    epochs); nan if it never does."""
    tr, va = np.log(curve.train), np.log(curve.val)
    below = np.flatnonzero(tr <= np.log(level))
    if not len(below):
        return float("nan")
    i = below[0]
    if i == 0:
        return curve.val[0] - curve.train[0]
    f = (tr[i - 1] - np.log(level)) / (tr[i - 1] - tr[i])
    return float(np.exp(va[i - 1] + f * (va[i] - va[i - 1]))) - level


def _fit(ctx: LabContext, norm: str, seed: int, epochs: int, ghost: bool = False):
    import goodfit

    curve = _Curve()
    run = goodfit.run("digits-cnn", {
        "seed": seed, "model.norm": norm, "model.width": 16, "model.dropout": 0, "optimizer.lr": LR,
        "optimizer.weight_decay": 0, "data.perturb.subset": SUBSET, "train.epochs": epochs, "train.batch_size": BATCH,
        "train.threads": 1, "train.early_stopping.patience": None, "train.early_stopping.restore_best": False,
        "doctor.enabled": False,
    }, out=ctx.out / "runs", progress=False, callbacks=[_GhostSwap(GHOST), curve] if ghost else [curve])
    return run, curve


def _train_mode_loss(model: nn.Module, x, y, seed: int) -> float:
    """The loss with train-mode statistics: `x` in random batches of BATCH, each normalized by its own statistics
    (on a copy, so the running statistics are left alone)."""
    m = copy.deepcopy(model).train()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    total = 0.0
    with torch.no_grad():
        for idx in order.split(BATCH):
            total += F.cross_entropy(m(x[idx]), y[idx], reduction="sum").item()
    return total / len(x)


def _mate_noise(model: nn.Module, probes, pool, draws: int, seed: int) -> float:
    """Std of a sample's train-mode logits over `draws` random sets of BATCH − 1 batch-mates from `pool`,
    averaged over the probes and classes."""
    m = copy.deepcopy(model).train()
    g = torch.Generator().manual_seed(seed)
    outs = []
    with torch.no_grad():
        for _ in range(draws):
            mates = pool[torch.randperm(len(pool), generator=g)[:BATCH - 1]]
            outs.append(torch.stack([m(torch.cat([p[None], mates]))[0] for p in probes]))
    return torch.stack(outs).std(0).mean().item()


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt

    torch.set_num_threads(1)
    seeds = [0, 1] if ctx.quick else [0, 1, 2, 3, 4]
    kinds = ["batch", "layer", "none"] if ctx.quick else [*NORMS, "ghost"]
    epochs = 15

    # ------------------------------------------------------------ the controlled comparison
    runs, curves = {}, {}
    for kind in kinds:
        for seed in seeds:
            runs[kind, seed], curves[kind, seed] = _fit(ctx, "batch" if kind == "ghost" else kind, seed, epochs,
                                                        ghost=kind == "ghost")
    final = {k: [curves[k, s].val[-1] - curves[k, s].train[-1] for s in seeds] for k in kinds}
    matched = {k: [_matched_gap(curves[k, s], LEVEL) for s in seeds] for k in kinds}
    mean_m = {k: float(np.mean(v)) for k, v in matched.items()}  # nan if a run never reached LEVEL
    n_train = len(runs[kinds[0], seeds[0]].data.x_train)
    ctx.table(f"digits-cnn on {n_train} training digits, AdamW {LR:g}, {epochs} epochs, batch {BATCH}, no dropout or "
              f"weight decay; losses in eval mode; mean of {len(seeds)} seeds",
              ["norm", "final train loss", "final val loss", "final val − train", f"val − train at train loss {LEVEL}",
               "its min over seeds", "its max over seeds"],
              [[NAMES[k], np.mean([curves[k, s].train[-1] for s in seeds]),
                np.mean([curves[k, s].val[-1] for s in seeds]), np.mean(final[k]), mean_m[k], np.min(matched[k]),
                np.max(matched[k])] for k in kinds])
    mean_f = {k: float(np.mean(v)) for k, v in final.items()}
    normed = [k for k in kinds if k not in ("none", "ghost")]
    samplewise = [k for k in ("layer", "group") if k in kinds]
    ctx.check(all(mean_f["none"] > mean_f[k] for k in normed),
              "after the same training every normalization, batch-dependent or not, leaves a smaller generalization "
              "gap (val − train loss, eval mode, mean over seeds) than no normalization",
              ", ".join(f"{NAMES[k]} {mean_f[k]:.3f}" for k in kinds if k != "ghost"))
    best_sw = min(mean_f[k] for k in samplewise)
    ctx.check(abs(mean_f["batch"] - best_sw) < SAME_TOL,
              f"but batch-dependent BN does not narrow it clearly more than sample-wise normalization: BN's mean gap "
              f"is within ±{SAME_TOL} of the best of {'/'.join(NAMES[k] for k in samplewise)} (no batch noise at "
              "all)",
              f"BN {mean_f['batch']:.3f}, best sample-wise {best_sw:.3f}")
    if "ghost" in kinds:
        val = {k: float(np.mean([curves[k, s].val[-1] for s in seeds])) for k in ("batch", "ghost")}
        ctx.check(mean_f["ghost"] > mean_f["batch"] - GHOST_TOL and val["ghost"] > val["batch"],
                  f"and the controlled noise knob agrees: BN with statistics over ghost batches of {GHOST} (far more "
                  f"batch noise, everything else identical) does not narrow the final gap (not below BN's by more than "
                  f"{GHOST_TOL}) and ends with a higher val loss",
                  f"gap {mean_f['ghost']:.3f} vs {mean_f['batch']:.3f}, "
                  f"val loss {val['ghost']:.3f} vs {val['batch']:.3f}")
    sem = {k: float(np.std(v) / np.sqrt(len(v))) for k, v in matched.items()}
    ctx.log(f"The final gap mixes regularization with how far each net got (BN fits fastest). At equal training loss "
            f"({LEVEL}) the gaps are " + ", ".join(f"{NAMES[k]} {mean_m[k]:.3f} ± {sem[k]:.3f}" for k in kinds) +
            " (mean ± standard error over seeds; nan: a run never got there): compare them against that spread, "
            "not against each other's decimals.")

    # ------------------------------------------------------------ the batch noise itself
    data = runs["batch", seeds[0]].data
    probes = data.x_train[:4 if ctx.quick else 8]
    draws = 8 if ctx.quick else 16
    noise = {k: _mate_noise(runs[k, seeds[0]].model, probes, data.x_train, draws, seed=1) for k in kinds if k != "none"}
    ctx.table(f"train mode: std of a training digit's logits over {draws} random sets of {BATCH - 1} batch-mates "
              f"(seed {seeds[0]}'s nets)", ["norm", "logit std"], [[NAMES[k], v] for k, v in noise.items()])
    ctx.check(noise["batch"] > 0.05 and all(noise[k] < 1e-5 for k in samplewise),
              "only BN has batch noise: in train mode a sample's logits move with its batch-mates under BN (std > "
              "0.05) and not at all under LN/GN (std < 1e-5)",
              ", ".join(f"{NAMES[k]} {v:.3g}" for k, v in noise.items()))
    if "ghost" in kinds:
        ctx.check(noise["ghost"] > 2 * noise["batch"],
                  f"ghost batches of {GHOST} more than double that noise (the knob above really turns it up)",
                  f"{noise['ghost']:.3f} vs {noise['batch']:.3f}")

    # ------------------------------------------------------------ eval- vs train-mode statistics
    ev = [(curves["batch", s].train[-1], curves["batch", s].val[-1]) for s in seeds]
    tm = [(_train_mode_loss(runs["batch", s].model, runs["batch", s].data.x_train, runs["batch", s].data.y_train, s),
           _train_mode_loss(runs["batch", s].model, runs["batch", s].data.x_val, runs["batch", s].data.y_val, s))
          for s in seeds]
    logged = [runs["batch", s].history[-1]["train_loss"] for s in seeds]
    ev_gap = float(np.mean([v - t for t, v in ev]))
    tm_gap = float(np.mean([v - t for t, v in tm]))
    ctx.table("the BN nets after the last epoch, scored with running (eval) vs batch (train-mode) statistics",
              ["statistics", "train loss", "val loss", "val − train"],
              [["eval mode: running statistics", np.mean([t for t, _ in ev]), np.mean([v for _, v in ev]), ev_gap],
               [f"train mode: batches of {BATCH}", np.mean([t for t, _ in tm]), np.mean([v for _, v in tm]), tm_gap],
               ["train loss as logged by the loop (train mode, mean over the last epoch)", float(np.mean(logged)),
                np.mean([v for _, v in ev]), float(np.mean([v for _, v in ev]) - np.mean(logged))]])
    ctx.check(all(t > e for (t, _), (e, _) in zip(tm, ev)) and abs(tm_gap - ev_gap) < MODE_TOL,
              f"train-mode statistics raise the training loss for every seed (the batch noise costs fit) but the val "
              f"loss about as much: the gap moves by less than {MODE_TOL}",
              f"train-mode gap {tm_gap:.3f} vs eval-mode {ev_gap:.3f}")

    # ------------------------------------------------------------ figure
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4.4))
    colors = {"batch": "tab:red", "layer": "tab:blue", "group": "tab:green", "none": "tab:gray", "ghost": "tab:orange"}
    for k in kinds:
        for i, s in enumerate(seeds):
            ax1.plot(curves[k, s].train, np.array(curves[k, s].val) - np.array(curves[k, s].train), color=colors[k],
                     lw=1, alpha=0.7, label=NAMES[k] if i == 0 else None)
    ax1.axvline(LEVEL, color="k", ls=":", lw=1)
    ax1.set_xscale("log")
    ax1.invert_xaxis()
    ax1.set_xlabel("training loss (eval mode) → training proceeds")
    ax1.set_ylabel("val − train loss")
    ax1.set_title(f"gap against fit, one line per seed (dotted: {LEVEL})")
    ax1.legend(fontsize=8)
    for i, k in enumerate(kinds):
        ax2.scatter(np.full(len(seeds), i - 0.12), matched[k], color=colors[k], s=14)
        ax2.scatter(np.full(len(seeds), i + 0.12), final[k], color=colors[k], s=14, marker="x")
        ax2.plot([i - 0.22, i - 0.02], [mean_m[k]] * 2, color=colors[k], lw=2)
        ax2.plot([i + 0.02, i + 0.22], [np.mean(final[k])] * 2, color=colors[k], lw=2, ls="--")
    ax2.set_xticks(range(len(kinds)), [NAMES[k].replace(", ghost batches of ", "\nghost ") for k in kinds])
    ax2.set_ylabel("val − train loss")
    ax2.set_title(f"gap per seed: at training loss {LEVEL} (dots) and final (crosses)")
    bars = ax3.bar(range(len(noise)), list(noise.values()), color=[colors[k] for k in noise])
    ax3.bar_label(bars, fmt="%.3g")
    ax3.set_xticks(range(len(noise)), [NAMES[k].replace(", ghost batches of ", "\nghost ") for k in noise])
    ax3.set_ylabel("logit std over random batch-mates (train mode)")
    ax3.set_title("batch noise: only batch-dependent norms have it")
    fig.tight_layout()
    ctx.figure(fig, "norm_regularization")


LAB = Lab(id="1.5.8", title="Do normalization methods regularize?",
          question="归一化方法是否具备正则化效果？如果有，其背后的原因是什么？ — Do normalization methods regularize; why?",
          answer=ANSWER, run=run, uses="norms")
