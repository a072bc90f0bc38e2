"""1.5.1 Input normalization: raw wine / breast-cancer features train far slower than standardized ones; the doctor
flags the raw runs."""
from __future__ import annotations

import math
import shutil

import numpy as np
import torch

from goodfit.labs import Lab, LabContext

ANSWER = r"""
A network's first layer computes z = Wx + b, so its gradient is ∂L/∂W = δ xᵀ: **each weight's
gradient is proportional to the scale of its input feature**, and each feature's effect on z is
proportional to it too. With features on very different scales (a wine's proline ≈ 750 next to its
hue ≈ 1; a tumour's area ≈ 650 next to its smoothness ≈ 0.1):

- **Ill-conditioning.** Near a minimum the loss is ≈ quadratic with curvature ∝ E[xxᵀ]; its
  condition number κ grows with the square of the scale ratio (and with large means: an
  uncentered feature adds a huge eigenvalue along the mean). Gradient descent needs η < 2/λmax, set
  by the largest feature, and then moves along the small features at rate ηλmin: **~κ steps to
  converge**. The loss surface is a long narrow valley; steps zig-zag across it instead of along.
- **Initialization assumes unit-scale inputs.** Default / He / Xavier init give z unit variance
  only if x has it. Features of size 10³ give pre-activations of 10²–10³ at step 0: huge initial
  loss (confidently wrong logits), saturated sigmoid/tanh units, ReLU units that die after the
  first large updates.
- **Adaptive optimizers help only partly**: Adam rescales each parameter's step, but the first
  layer mixes all features in every unit, and the large initial pre-activations remain.
- Penalties (L2) and distance-based parts (k-NN, RBF, attention with unnormalized keys) weigh
  features by their arbitrary units.

**Remedy**: standardize each feature, x' = (x − μ_train)/σ_train, with μ, σ fitted on the
*training split only* and reused for val/test/deployment (`data.normalize: standard`; `minmax` for
bounded features; log-transform heavy-tailed ones first). Inside the network, batch/layer norm do
the same for hidden activations (lab 1.5.3). Standardizing fixes scales and offsets, not
correlations: breast cancer's radius, perimeter and area are nearly collinear, so its κ stays
≈ 10⁵ after standardizing (whitening / PCA would remove that too) — still 10⁷ below the raw κ.

The lab trains goodfit's wine and breast-cancer MLP recipes (AdamW, recipe defaults, constant LR,
no early stopping) with `data.normalize: standard` and `none`, several seeds each, and compares the
epochs needed to reach a training loss of a quarter of the chance-level loss. The doctor's
pre-flight input check (`unnormalized_inputs`, from the per-feature RMS of the training inputs)
must flag every raw run and no standardized one.
"""

DATASETS = {"wine": ("wine-mlp", "classification", 3), "breast cancer": ("breast-cancer-mlp", "binary", 2)}
TARGET = 0.25         # "converged": training loss at most this fraction of the chance-level loss
SPEEDUP = 5.0         # standardized must reach it at least this many times sooner (epochs), every dataset
METRIC = "val_accuracy"
KAPPA_RATIO = 1e3     # raw inputs' κ of E[x̃x̃ᵀ] (x̃ = [x, 1]) at least this × the standardized inputs' κ


def condition_number(x: torch.Tensor) -> float:
    """κ of E[x̃ x̃ᵀ], x̃ = [x, 1]: the Hessian of a linear least-squares model on these inputs (float64)."""
    x = x.reshape(len(x), -1).double()
    xt = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    ev = torch.linalg.eigvalsh(xt.T @ xt / len(x))
    return float(ev[-1] / ev[0].clamp_min(1e-300))


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt

    import goodfit

    torch.set_num_threads(1)
    datasets = {"wine": DATASETS["wine"]} if ctx.quick else DATASETS
    seeds = (0, 1) if ctx.quick else (0, 1, 2)
    epochs = 25 if ctx.quick else 40
    runs_root = ctx.out / "runs"
    shutil.rmtree(runs_root, ignore_errors=True)  # this lab's own scratch folder
    res: dict = {}
    for ds, (recipe, _task, k) in datasets.items():
        for norm in ("standard", "none"):
            for s in seeds:
                r = goodfit.run(recipe, {"data.normalize": norm, "seed": s, "train.epochs": epochs,
                                         "schedule.name": "constant", "train.early_stopping.patience": None,
                                         "train.threads": 1}, out=runs_root / f"{ds}_{norm}_{s}", progress=False)
                res[ds, norm, s] = r
    ctx.log(f"recipes {', '.join(v[0] for v in datasets.values())}: AdamW, constant LR, {epochs} epochs, "
            f"no early stopping, seeds {list(seeds)}")

    # ------------------------------------------------------------ the inputs
    scale_rows, kappa = [], {}
    for ds in datasets:
        for norm in ("standard", "none"):
            x = res[ds, norm, seeds[0]].data.x_train.double()
            rms = (x.pow(2).mean(0)).sqrt()
            kappa[ds, norm] = condition_number(x)
            scale_rows.append([ds, norm, f"{float(rms.min()):.3g}", f"{float(rms.max()):.3g}",
                               f"{float(rms.max() / rms.min()):.3g}", f"{kappa[ds, norm]:.3g}"])
    ctx.table("training inputs as the model sees them: per-feature RMS √E[x²] (min, max, ratio) and the condition "
              "number κ of E[x̃x̃ᵀ] (the curvature of a linear least-squares fit on them)",
              ["data", "normalize", "min RMS", "max RMS", "ratio", "κ"], scale_rows)
    ctx.check(all(kappa[ds, "none"] >= KAPPA_RATIO * kappa[ds, "standard"] for ds in datasets),
              f"raw inputs are ill-conditioned: κ(raw) ≥ {KAPPA_RATIO:g} × κ(standardized) on every dataset",
              ", ".join(f"{ds}: {kappa[ds, 'none']:.2g} vs {kappa[ds, 'standard']:.2g}" for ds in datasets))

    # ------------------------------------------------------------ convergence
    def epochs_to_target(r, k) -> int:
        """First epoch whose mean training loss is ≤ TARGET × chance; epochs + 1 if never (a lower bound)."""
        chance = math.log(k)  # ln K classes; binary: ln 2
        hit = [h["epoch"] for h in r.history if h["train_loss"] <= TARGET * chance]
        return hit[0] if hit else epochs + 1

    rows, speed = [], {}
    for ds, (_recipe, _task, k) in datasets.items():
        for norm in ("standard", "none"):
            rs = [res[ds, norm, s] for s in seeds]
            hits = [epochs_to_target(r, k) for r in rs]
            speed[ds, norm] = hits
            rows.append([ds, norm, ", ".join(str(h) if h <= epochs else f">{epochs}" for h in hits),
                         f"{np.mean([r.history[0]['train_loss'] for r in rs]):.3g}",
                         f"{np.mean([r.history[-1]['train_loss'] for r in rs]):.3g}",
                         f"{np.mean([r.history[-1][METRIC] for r in rs]):.3f}",
                         ", ".join(sorted({f.id for r in rs for f in r.diagnosis.findings if f.severity != 'info'}))
                         or "(none)"])
    ctx.table(f"epochs to a training loss ≤ {TARGET:g} × chance level (per seed; >{epochs}: never), mean training "
              "loss in the first / last epoch, final val accuracy, and the doctor's warnings",
              ["data", "normalize", "epochs to target", "loss epoch 1", "final loss", "val acc", "doctor (warning)"],
              rows)
    for ds in datasets:
        std, raw = speed[ds, "standard"], speed[ds, "none"]
        ctx.measure(f"{ds}: mean epochs to target, standardized / raw (raw never = {epochs + 1})",
                    f"{np.mean(std):.1f} / {np.mean(raw):.1f}")
    ctx.check(all(h <= epochs for ds in datasets for h in speed[ds, "standard"]),
              f"standardized inputs reach the target loss within the budget on every dataset and seed")
    ctx.check(all(np.mean(speed[ds, "none"]) >= SPEEDUP * np.mean(speed[ds, "standard"]) for ds in datasets),
              f"standardized inputs converge ≥ {SPEEDUP:g}× faster (mean epochs to target over seeds; a raw run that "
              "never gets there counts as budget + 1, so the true ratio is larger)",
              ", ".join(f"{ds}: {np.mean(speed[ds, 'none']) / np.mean(speed[ds, 'standard']):.1f}×" for ds in datasets))
    gap = {ds: np.mean([res[ds, "standard", s].history[-1][METRIC] - res[ds, "none", s].history[-1][METRIC]
                        for s in seeds]) for ds in datasets}
    ctx.check(all(g > 0.02 for g in gap.values()), "and end better: final val accuracy of standardized − raw > 0.02 "
              "(mean over seeds, every dataset)", ", ".join(f"{ds}: +{g:.3f}" for ds, g in gap.items()))

    # ------------------------------------------------------------ the doctor
    def finding(r, fid):
        return next((f for f in r.diagnosis.findings if f.id == fid), None)

    flagged = {key: finding(r, "unnormalized_inputs") for key, r in res.items()}
    raw_missed = [f"{ds} seed {s}" for (ds, norm, s), f in flagged.items()
                  if norm == "none" and (f is None or f.severity != "warning")]
    shown = {ds: flagged[ds, "none", seeds[0]].evidence.get("max_feature_rms", math.nan) if flagged[ds, "none", seeds[0]]
             else math.nan for ds in datasets}
    ctx.check(not raw_missed, "doctor label: every raw (normalize: none) run carries the `unnormalized_inputs` "
              "warning", ", ".join(raw_missed) or "evidence: " + ", ".join(
                  f"{ds} max feature RMS {v:.3g}" for ds, v in shown.items()))
    false_alarm = [f"{ds} seed {s}" for (ds, norm, s), f in flagged.items() if norm == "standard" and f is not None]
    ctx.check(not false_alarm, "doctor label: no standardized run is flagged `unnormalized_inputs`",
              ", ".join(false_alarm))
    bad = [f"{ds} seed {s}: {r.diagnosis.verdict} " + ", ".join(f.id for f in r.diagnosis.warnings())
           for (ds, norm, s), r in res.items() if norm == "standard"
           and (r.diagnosis.verdict != "good_fit" or r.diagnosis.warnings())]
    ctx.check(not bad, "doctor label: every standardized run's verdict is good_fit with no warning", "; ".join(bad))

    # ------------------------------------------------------------ figure
    fig, axes = plt.subplots(1, 1 + len(datasets), figsize=(6 + 5 * len(datasets), 4.6))
    x_raw = res["wine", "none", seeds[0]].data.x_train.double()
    x_std = res["wine", "standard", seeds[0]].data.x_train.double()
    idx = np.arange(x_raw.shape[1])
    axes[0].bar(idx - 0.2, x_raw.pow(2).mean(0).sqrt().numpy(), 0.4, label="raw (normalize: none)")
    axes[0].bar(idx + 0.2, x_std.pow(2).mean(0).sqrt().numpy(), 0.4, label="standardized")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("wine feature")
    axes[0].set_ylabel("RMS over the training split")
    axes[0].set_title("feature scales the first layer sees")
    axes[0].legend(fontsize=8)
    for ax, (ds, (_recipe, _task, k)) in zip(axes[1:], datasets.items()):
        chance = math.log(k)  # ln K classes; binary: ln 2
        for norm, color in (("standard", "tab:green"), ("none", "tab:red")):
            for i, s in enumerate(seeds):
                h = res[ds, norm, s].history
                ax.plot([e["epoch"] for e in h], [e["train_loss"] for e in h], color=color, lw=1, alpha=0.8,
                        label=f"normalize: {norm}" if i == 0 else None)
        ax.axhline(TARGET * chance, color="grey", ls=":", lw=0.8, label=f"target {TARGET:g} × chance")
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss")
        ax.set_title(f"{ds}: {len(seeds)} seeds each")
        ax.legend(fontsize=8)
    ctx.figure(fig, "normalization")


LAB = Lab(id="1.5.1", title="Why normalize the inputs",
          question="深度学习训练中为什么要做特征/数据归一化？不归一化可能会导致哪些训练问题？ — Why normalize inputs; "
                   "what goes wrong without.",
          answer=ANSWER, run=run, uses="input normalization, doctor")
