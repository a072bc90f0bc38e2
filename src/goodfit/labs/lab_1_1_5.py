"""1.1.5 Early stopping: a patience × min_delta sweep on an overfitting run; restored weights are exact."""
from __future__ import annotations

import shutil

import numpy as np

from goodfit.labs import Lab, LabContext

ANSWER = r"""
**Early stopping** treats the number of training epochs as a hyperparameter chosen on the
validation set, online: after every epoch it compares the monitored validation quantity with the
best so far, stops once it has not improved for a while, and hands back the weights of the best
epoch (not the last). It is a regularizer: limiting the number of steps limits how far the weights
can travel from their initialization, so the network fits the broad pattern before it memorizes the
noise of the training set.

The trigger, with monitored value v_t (lower is better, e.g. val loss) and best b = min_{s<t} v_s:

- improvement at epoch t ⇔ v_t < b − min_delta  (then b ← v_t, best epoch ← t, counter ← 0);
- otherwise counter ← counter + 1, and training **stops when counter = patience**;
- restore_best: deliver the weights saved at the best epoch.

So the run stops at best_epoch + patience and pays `patience` epochs to confirm each stop.

**Setting it.**
- *Monitor* validation loss (smooth, sensitive) or the metric you will report; always on
  validation data, never test.
- *patience* must outlast the noise of the validation curve: single bad epochs happen (small
  validation sets, large LR, augmentation), and too small a patience stops at a spurious dip.
  A few epochs (3–10) for smooth curves, more for noisy ones; with LR decay or plateaus the
  curve can still improve late, so patience should cover the time scale of the schedule.
  Cost: each extra unit of patience is one more epoch run after the best one.
- *min_delta* is the smallest change you believe is real: about the epoch-to-epoch noise of the
  monitored value (or its resolution: 1/n_val for accuracy). Zero counts every tiny dip as
  progress; too large a value ignores genuine slow improvement, stops early and restores a worse
  epoch (it keeps the last *significant* best).
- Keep *restore_best* on; then a generous patience costs only compute, not accuracy.
- Early stopping optimizes what it monitors: near the minimum, the epoch with the lowest
  validation loss need not have the best validation accuracy (the table shows such a case).

The lab overfits on purpose (300 digits with 30% of their labels flipped, a 256-wide MLP, no
dropout or weight decay, constant LR): validation loss bottoms out early and then climbs as the
network memorizes the wrong labels. It sweeps patience × min_delta, records the epochs saved and
the validation loss given up against the same run without early stopping, and checks that the
delivered model reproduces the best epoch's validation loss bit for bit.
"""

BASE = ["data.perturb.subset=300", "data.perturb.label_noise=0.3", "model.width=256", "model.dropout=0",
        "optimizer.weight_decay=0", "optimizer.lr=0.001", "schedule.name=constant", "train.batch_size=32",
        "train.threads=1"]


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt

    import goodfit
    from goodfit.runner import evaluate_run

    epochs = 40 if ctx.quick else 80
    patiences = [1, 3, 10] if ctx.quick else [1, 2, 3, 5, 10, 20]
    min_deltas = [0.0, 0.02] if ctx.quick else [0.0, 0.01, 0.03]
    runs_root = ctx.out / "runs"
    shutil.rmtree(runs_root, ignore_errors=True)  # this lab's own scratch folder

    def train(patience, min_delta):
        return goodfit.run("digits-mlp", [*BASE, f"train.epochs={epochs}",
                                          f"train.early_stopping.patience={'null' if patience is None else patience}",
                                          f"train.early_stopping.min_delta={min_delta}",
                                          "train.early_stopping.restore_best=true"], out=runs_root, progress=False)

    # ---------------------------------------------------------------- the reference: no early stopping
    full = train(None, 0.0)
    vl = np.array([h["val_loss"] for h in full.history])
    va = np.array([h["val_accuracy"] for h in full.history])
    oracle = int(vl.argmin()) + 1
    ctx.measure("epochs of the run without early stopping", len(vl))
    ctx.measure("oracle best epoch (min val loss over all epochs)", oracle)
    ctx.measure("val loss: oracle best / last epoch", f"{vl.min():.4f} / {vl[-1]:.4f}")
    ctx.measure("val accuracy: at oracle epoch / last epoch", f"{va[oracle - 1]:.4f} / {va[-1]:.4f}")
    window = vl[max(0, oracle - 6):oracle + 10]
    noise = float(np.median(np.abs(np.diff(window))))
    ctx.measure("val loss epoch-to-epoch change near the minimum (median abs Δ)", noise)
    ctx.check(vl[-1] > 1.25 * vl.min() and oracle <= len(vl) // 3,
              "the run overfits: best epoch in the first third, final val loss > 1.25 × its minimum",
              f"best epoch {oracle}/{len(vl)}, {vl[-1] / vl.min():.2f}×")
    ctx.check(full.best_epoch == oracle and full.state.stop_reason is None,
              "without early stopping (patience = null) the run trains all epochs and restore_best delivers the oracle epoch")

    # ---------------------------------------------------------------- the sweep
    results, rows = [], []
    exact, prefix_ok, rule_ok = [], [], []
    for md in min_deltas:
        for p in patiences:
            r = train(p, md)
            h_vl = [h["val_loss"] for h in r.history]
            stop, best = len(h_vl), r.best_epoch
            delivered = h_vl[best - 1]
            again = evaluate_run(r.dir, split="val")  # the best checkpoint, reloaded into a freshly built model
            exact.append(again["loss"] == delivered)
            prefix_ok.append(h_vl == vl[:stop].tolist())
            rule_ok.append(r.state.stop_reason == "early_stopping" and stop == best + p)
            acc = r.history[best - 1]["val_accuracy"]
            results.append({"patience": p, "min_delta": md, "stop": stop, "best": best, "val_loss": delivered,
                            "lost": delivered - vl.min(), "acc": acc, "saved": len(vl) - stop})
            rows.append([p, md, stop, len(vl) - stop, best, delivered, delivered - vl.min(), acc,
                         acc - va[oracle - 1], "==" if exact[-1] else f"≠ {again['loss']!r}"])
    ctx.table("patience × min_delta: stop = last epoch run, saved = epochs not run, restored = delivered epoch, "
              "Δ = against the same run without early stopping (which delivers the oracle epoch), "
              "reloaded = evaluate_run(run.dir, 'val') loss vs the history's",
              ["patience", "min_delta", "stop", "saved", "restored", "val loss", "Δ loss", "val acc", "Δ acc",
               "reloaded"], rows)

    ctx.check(all(prefix_ok), "early stopping only cuts the run: every stopped run's val-loss history equals the "
                              "full run's first epochs exactly")
    ctx.check(all(rule_ok), "each run stopped exactly `patience` epochs after its last improvement of more than min_delta")
    ctx.check(all(exact), "restored weights reproduce the best epoch's val loss exactly: evaluate_run(run.dir, 'val') "
                          "equals the history's val loss at best_epoch, for every setting", f"{sum(exact)}/{len(exact)} exact")
    ctx.check(all(r["val_loss"] < vl[-1] for r in results),
              "every early-stopped model beats the model trained to the end (lower val loss than the last epoch)")
    monotone = True
    for md in min_deltas:
        sub = [r for r in results if r["min_delta"] == md]
        monotone &= all(a["stop"] <= b["stop"] and a["lost"] >= b["lost"] for a, b in zip(sub, sub[1:]))
    ctx.check(monotone, "the trade-off: at fixed min_delta, more patience never saves more epochs and never loses "
                        "more val loss")
    patient = next(r for r in results if r["min_delta"] == 0.0 and r["patience"] == 10)
    ctx.measure("patience 10, min_delta 0: epochs saved", f"{patient['saved']} of {len(vl)}")
    ctx.check(patient["lost"] == 0.0 and patient["saved"] >= len(vl) // 3,
              "patience 10 with min_delta 0 finds the oracle epoch (0 val loss lost) and saves at least a third of the "
              "epochs",
              f"lost {patient['lost']:.4f}, saved {patient['saved']}/{len(vl)}")

    # ---------------------------------------------------------------- figure
    fig = plt.figure(figsize=(12, 6))
    grid = fig.add_gridspec(2, 2, height_ratios=[1.3, 1], width_ratios=[1.4, 1])
    ax1 = fig.add_subplot(grid[0, 0])
    ax3 = fig.add_subplot(grid[1, 0], sharex=ax1)
    ax2 = fig.add_subplot(grid[:, 1])
    ep = np.arange(1, len(vl) + 1)
    ax1.plot(ep, [h["train_loss"] for h in full.history], color="0.6", lw=1, label="train loss")
    ax1.plot(ep, vl, color="k", lw=1.5, label="val loss (no early stopping)")
    ax1.set_ylim(0, max(vl.max(), 1.0) * 1.05)
    ax1.set_ylabel("loss")
    ax1.set_title("the overfitting run, and where each setting stopped")
    colors = plt.cm.viridis(np.linspace(0, 0.8, len(min_deltas)))
    markers = "ov^sDP"
    labels = []
    for i, md in enumerate(min_deltas):
        for r in (r for r in results if r["min_delta"] == md):
            y = len(labels)
            labels.append(f"p={r['patience']}, δ={md:g}")
            ax3.plot([r["best"], r["stop"]], [y, y], color=colors[i], lw=2)
            ax3.scatter([r["best"]], [y], color=colors[i], marker="o", zorder=3)
            ax3.scatter([r["stop"]], [y], color=colors[i], marker="x", zorder=3)
            ax1.scatter([r["stop"]], [vl[r["stop"] - 1]], color=colors[i], marker=markers[i], s=18, zorder=3)
    for ax in (ax1, ax3):
        ax.axvline(oracle, color="tab:green", ls=":", lw=1)
    ax1.plot([], [], color="tab:green", ls=":", label=f"oracle best epoch {oracle}")
    ax1.legend(fontsize=7)
    ax3.set_yticks(range(len(labels)), labels, fontsize=6)
    ax3.invert_yaxis()
    ax3.set_xlabel("epoch   (o restored best epoch, x stop; the segment is the patience paid)")
    for i, md in enumerate(min_deltas):
        sub = [r for r in results if r["min_delta"] == md]
        ax2.plot([r["saved"] for r in sub], [r["lost"] for r in sub], marker=markers[i], color=colors[i],
                 label=f"min_delta={md:g}")
        for r in sub:
            ax2.annotate(f"p={r['patience']}", (r["saved"], r["lost"]), fontsize=7, xytext=(3, 3 + 8 * i),
                         textcoords="offset points", color=colors[i])
    ax2.set_xlabel(f"epochs saved (of {len(vl)})")
    ax2.set_ylabel("val loss given up vs the oracle epoch")
    ax2.set_title("the trade-off")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    ctx.figure(fig, "early_stopping")


LAB = Lab(id="1.1.5", title="Early stopping",
          question="什么是早停（Early Stopping）？在训练流程中如何合理设置早停的触发条件？ — What is early stopping; "
                   "how to set its trigger.",
          answer=ANSWER, run=run, uses="early stopping, checkpoints")
