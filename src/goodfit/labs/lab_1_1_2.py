"""1.1.2 Train / validation / test: selecting a model on the test split makes its test score optimistic."""
from __future__ import annotations

import shutil

import numpy as np
import torch

from goodfit.labs import Lab, LabContext

ANSWER = r"""
- **Training set**: fits the parameters θ (gradient descent minimizes the training loss).
- **Validation set**: fits everything gradient descent does not: hyperparameters (width, LR, weight
  decay, …), the epoch to stop at, the choice between models. It is *used up* by that choice.
- **Test set**: touched once, at the end, to estimate how the chosen model does on new data.

Why not tune on test: a score measured on n samples is the true accuracy plus noise of size
≈ √(p(1−p)/n). Choosing the best of K candidates by that score also chooses the candidate whose noise
happened to be most favourable, so the winner's score is biased upward:
E[max_k â_k] ≥ max_k E[â_k] = max_k a_k, the gap growing with K and shrinking with n (selection bias,
the "winner's curse"). Once the test set has picked the model it is just a second validation set,
and no unbiased estimate is left. Validation scores are optimistic in the same way — which is
exactly why a separate test set is kept for the final report.

**How the lab measures it.** From the 1,797 digits, each seed first sets aside a *reservoir* of
1,397 images that goodfit never sees (not for training, not for normalization statistics, not for
selection). The remaining 400 go to goodfit as the data set (train 320 / val 80). Six hidden widths
(8…256) are trained. A "test set" of 100 images is drawn from the reservoir; the rest of the
reservoir (1,297 images) is the **fresh holdout**, disjoint from that test set and from everything
goodfit touched. Rule A picks the width with the best test accuracy, rule B the best validation
accuracy; for both we compare the reported test accuracy with the fresh accuracy. Redrawing the
test/fresh partition 2,000 times per seed (cheap: predictions are computed once) averages out the
luck of one test draw, leaving the bias itself. Rule B's pick never saw the test draw, so its
reported − fresh gap is ≈ 0; rule A's is positive.

goodfit enforces the discipline: a run's test split is evaluated once, after training, and recorded
in `test.json`; `goodfit evaluate --split test` refuses to evaluate it again unless `--force`, and
the forced evaluation is recorded. The lock cannot stop a person from comparing many runs' test
scores, which is the same mistake as above: tune on validation, report test.
"""

WIDTHS = [8, 16, 32, 64, 128, 256]
POOL = 400          # samples goodfit sees per seed (train + val)
TEST_SIZE = 100     # size of each test draw from the reservoir
DRAWS = 2000        # test/fresh partitions per seed
TOL = 0.003         # accuracy points: the bias must exceed this, the val rule must stay within it


def _fit_candidates(ctx: LabContext, x: np.ndarray, y: np.ndarray, seed: int):
    """Train one model per width on the pool; return (val accuracies, correctness matrix on the reservoir)."""
    from goodfit.recipe import load_recipe
    from goodfit.runner import build, resolve

    perm = np.random.default_rng([112, seed]).permutation(len(y))
    pool, reservoir = perm[:POOL], perm[POOL:]
    path = ctx.out / "data" / f"pool-seed{seed}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x[pool], y=y[pool])
    val_acc, correct = [], []
    for width in WIDTHS:
        recipe = resolve(load_recipe("digits-mlp", [
            f"data.source={path}", "data.split.val=0.2", "data.split.test=0", f"seed={seed}", f"model.width={width}",
            "train.early_stopping.patience=null", "train.early_stopping.restore_best=false", "train.threads=1"]))
        parts = build(recipe, progress=False)  # the objects of a run, without a run directory: a throwaway candidate
        state = parts.trainer.fit()
        val_acc.append(state.history[-1]["val_accuracy"])
        norm = parts.data.info["normalize"]  # statistics fitted on this candidate's training split
        shape = (-1,) + (1,) * (x.ndim - 2)  # per channel
        xr = (x[reservoir] - np.asarray(norm["shift"]).reshape(shape)) / np.asarray(norm["scale"]).reshape(shape)
        model = parts.trainer.model.eval()
        with torch.no_grad():
            pred = model(torch.as_tensor(xr, dtype=torch.float32)).argmax(1).numpy()
        correct.append(pred == y[reservoir])
    return np.array(val_acc), np.array(correct, dtype=np.float64), (path, len(parts.data.y_train), len(parts.data.y_val))


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = digits.data.reshape(-1, 1, 8, 8), digits.target
    seeds = list(range(2 if ctx.quick else 10))
    rows, gaps_t, gaps_v, points = [], [], [], []
    per_draw_t, per_draw_v, val_optimism = [], [], []
    for seed in seeds:
        val_acc, correct, (pool_path, n_train, n_val) = _fit_candidates(ctx, x, y, seed)
        k, n_res = correct.shape
        rng = np.random.default_rng([1120, seed])
        test_idx = np.argsort(rng.random((DRAWS, n_res)), axis=1)[:, :TEST_SIZE]   # DRAWS random test sets
        test_acc = correct[:, test_idx].mean(axis=2)                                 # (K, DRAWS)
        fresh_acc = (correct.sum(1)[:, None] - test_acc * TEST_SIZE) / (n_res - TEST_SIZE)  # the rest of the reservoir
        draw = np.arange(DRAWS)
        pick_t = test_acc.argmax(0)      # rule A: best test score (ties -> the smaller width)
        pick_v = int(val_acc.argmax())   # rule B: best validation score, fixed before any test draw
        rep_t, fr_t = test_acc[pick_t, draw], fresh_acc[pick_t, draw]
        rep_v, fr_v = test_acc[pick_v], fresh_acc[pick_v]
        gaps_t.append((rep_t - fr_t).mean())
        gaps_v.append((rep_v - fr_v).mean())
        per_draw_t.append(rep_t - fr_t)
        per_draw_v.append(rep_v - fr_v)
        points.append((rep_t.mean(), fr_t.mean(), rep_v.mean(), fr_v.mean()))
        val_optimism.append(val_acc[pick_v] - fr_v.mean())
        common = np.bincount(pick_t, minlength=k).argmax()  # the test rule's pick changes with the draw
        rows.append([seed, WIDTHS[pick_v], rep_v.mean(), fr_v.mean(), gaps_v[-1],
                     WIDTHS[common], rep_t.mean(), fr_t.mean(), gaps_t[-1]])
    ctx.log(f"per seed: {n_train} train / {n_val} val samples in goodfit; reservoir {n_res}: test draws of "
            f"{TEST_SIZE}, fresh holdout {n_res - TEST_SIZE}; {DRAWS} draws; widths {WIDTHS}")
    ctx.table("reported test accuracy vs fresh-holdout accuracy of the selected width, mean over draws "
              "(test pick*: the width the test rule chose most often; its choice changes with the draw)",
              ["seed", "val pick", "reported", "fresh", "gap", "test pick*", "reported", "fresh", "gap"], rows)
    gap_t, gap_v = float(np.mean(gaps_t)), float(np.mean(gaps_v))
    se_t = float(np.std(gaps_t, ddof=1) / np.sqrt(len(gaps_t))) if len(gaps_t) > 1 else float("nan")
    all_t, all_v = np.concatenate(per_draw_t), np.concatenate(per_draw_v)
    ctx.measure("seeds", len(seeds))
    ctx.measure("mean reported − fresh, selected on TEST", gap_t)
    ctx.measure("  its standard error over seeds", se_t)
    ctx.measure("mean reported − fresh, selected on VAL", gap_v)
    ctx.measure("draws where the report overstates (test rule)", float(np.mean(all_t > 0)))
    ctx.measure("draws where the report overstates (val rule)", float(np.mean(all_v > 0)))
    ctx.measure("val accuracy of the val pick − its fresh accuracy (the val score is optimistic too)",
                float(np.mean(val_optimism)))
    ctx.measure("fresh accuracy of the test pick (mean)", float(np.mean([p[1] for p in points])))
    ctx.measure("fresh accuracy of the val pick (mean)", float(np.mean([p[3] for p in points])))
    ctx.check(gap_t > TOL, f"selecting on test reports an optimistic score: mean (reported − fresh) > {TOL}",
              f"{gap_t:+.4f}")
    ctx.check(gap_t - gap_v > TOL, f"… and more optimistic than selecting on val, by > {TOL}",
              f"{gap_t:+.4f} vs {gap_v:+.4f}")
    ctx.check(abs(gap_v) < TOL, f"selecting on val leaves the test report unbiased: abs(mean (reported − fresh)) < {TOL}",
              f"{gap_v:+.4f}")

    _test_lock(ctx, pool_path, seeds[-1])

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
    pts = np.array(points)
    lo, hi = pts.min() - 0.01, pts.max() + 0.01
    ax1.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="reported = fresh")
    ax1.scatter(pts[:, 1], pts[:, 0], color="tab:red", label="selected on test")
    ax1.scatter(pts[:, 3], pts[:, 2], color="tab:blue", marker="s", label="selected on val")
    for seed, p in zip(seeds, pts):
        ax1.plot([p[1], p[1]], [p[1], p[0]], color="tab:red", lw=0.6, alpha=0.6)
    ax1.set_xlabel("fresh-holdout accuracy")
    ax1.set_ylabel("reported test accuracy")
    ax1.set_title("one point per seed (mean over test draws)")
    ax1.legend(fontsize=8)
    # test accuracies move in steps of 1/TEST_SIZE: bins of that width avoid aliasing stripes
    step = 1 / TEST_SIZE
    edge = (np.ceil(max(np.abs(all_t).max(), np.abs(all_v).max()) / step) + 0.5) * step
    bins = np.arange(-edge, edge + step / 2, step)
    ax2.hist(all_v, bins=bins, alpha=0.6, color="tab:blue", label=f"val rule, mean {gap_v:+.4f}")
    ax2.hist(all_t, bins=bins, alpha=0.6, color="tab:red", label=f"test rule, mean {gap_t:+.4f}")
    ax2.axvline(0, color="k", lw=0.8)
    ax2.set_xlabel("reported − fresh accuracy, per test draw")
    ax2.set_ylabel("draws")
    ax2.set_title(f"{len(seeds)} seeds × {DRAWS} draws of {TEST_SIZE} test images")
    ax2.legend(fontsize=8)
    ctx.figure(fig, "selection_bias")


def _test_lock(ctx: LabContext, pool_path, seed: int) -> None:
    """goodfit evaluates a run's test split once; a second evaluation needs force and is recorded."""
    import json

    import goodfit
    from goodfit.errors import UserError
    from goodfit.runner import evaluate_run

    runs = ctx.out / "runs"
    shutil.rmtree(runs, ignore_errors=True)  # this lab's own scratch folder
    result = goodfit.run("digits-mlp", [f"data.source={pool_path}", f"seed={seed}", "train.threads=1",
                                        "train.epochs=10"], out=runs, progress=False)
    doc = json.loads((result.dir / "test.json").read_text())
    ctx.check(len(doc["evaluations"]) == 1, "after goodfit.run, test.json holds exactly one test evaluation")
    refused, message, hint = False, "", ""
    try:
        evaluate_run(result.dir, split="test")
    except UserError as e:
        refused, message, hint = True, e.message, e.hint or ""
    ctx.check(refused and "locked" in message and "--force" in hint,
              "a second evaluate_run(split='test') is refused with a UserError that says how to force it",
              f"hint: {hint}" if refused else "not refused")
    forced = evaluate_run(result.dir, split="test", force=True)
    doc = json.loads((result.dir / "test.json").read_text())
    evals = doc["evaluations"]
    ctx.check(len(evals) == 2 and evals[1]["forced"] and not evals[0]["forced"] and forced == evals[0]["metrics"],
              "with force=True it runs, is recorded in test.json as forced, and scores the same model identically",
              f"{len(evals)} evaluations")


LAB = Lab(id="1.1.2", title="Train, validation and test: why not tune on test",
          question="训练集、验证集、测试集的作用分别是什么？为什么不能用测试集参与模型调优？ — Roles of train/val/test; "
                   "why must the test set not be used for tuning?",
          answer=ANSWER, run=run, uses="splits, test lock")
