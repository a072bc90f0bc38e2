"""Does the LR finder's suggestion land near the best learning rate? (issue 4)

For each recipe: run the LR range test (at most one epoch) on each seed, then train the
recipe for its full epochs budget at every LR of a grid (default 14 LRs, a third of a decade
apart, 10^-4.33 .. 10^0) on the same seeds. Early stopping is off in the grid so that every
LR gets the same budget (patience would cut high-LR runs while their validation loss is
still noisy, before the schedule has decayed); each run is scored at its best epoch. The grid's best
LR is the one with the lowest *final* validation loss (end of the budget, where the schedule
has decayed the LR) averaged over the seeds. The best epoch's loss is printed too but not used:
the minimum over 30-40 noisy epochs favours whichever LR has the noisiest curve (the highest),
a selection bias that grows with the noise, not with the quality. Accuracy is printed too; it
saturates over a wide band of LRs on these datasets and so cannot rank them.
The finder "hits" when suggestion / grid-best lies within [1/3, 3]. Its val-loss regret is the
grid's final val loss at the suggestion (linear in log LR between the two grid LRs around it)
divided by the grid's best.

--held-out runs, instead of the recipes, settings the default rule was checked on but not chosen
with (digits-cnn with SGD, on a grid widened to 10^1; digits-mlp at batch 32; mnist1d-cnn
without norm): informational, not part of the pass/fail.

    python benchmarks/lr_finder_accuracy.py                 # the README table (25+ min on 1 core)
    python benchmarks/lr_finder_accuracy.py --quick         # 2 recipes, 9 LRs, fewer epochs
    python benchmarks/lr_finder_accuracy.py --held-out      # the held-out settings (informational)
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

import goodfit
from goodfit.errors import TrainingFailed
from goodfit.optim.lr_finder import DEFAULT_RULE, RULES

RECIPES = ["digits-mlp", "digits-cnn", "mnist1d-cnn"]
# (label, recipe, overrides, log10 of the grid's largest LR at least): SGD's best LR lies near 1
HELD_OUT = [("digits-cnn+sgd", "digits-cnn", {"optimizer.name": "sgd"}, 1.0),
            ("digits-mlp+batch32", "digits-mlp", {"train.batch_size": 32}, 0.0),
            ("mnist1d-cnn+nonorm", "mnist1d-cnn", {"model.norm": "none"}, 0.0)]


def grid(lo: float, hi: float, per_decade: int) -> list[float]:
    n = round((hi - lo) * per_decade) + 1
    return [float(10 ** e) for e in np.linspace(lo, hi, n)]


EPOCH_SECONDS: list[float] = []  # wall time of each grid epoch (training + validation): the finder's time unit


def train_score(recipe: str, lr: float, seed: int, extra: dict, out: str) -> tuple[float, float, float]:
    """(final validation loss, best-epoch validation loss, final validation accuracy); inf if it diverged."""
    overrides = {"seed": seed, "optimizer.lr": lr, "train.threads": 1, "train.checkpoint_interval": 1e9,
                 "train.early_stopping.patience": None, "doctor.enabled": False, **extra}
    try:
        run = goodfit.run(recipe, overrides, out=out, progress=False)
    except TrainingFailed:  # diverged: the worst possible score
        return math.inf, math.inf, 0.0
    EPOCH_SECONDS.extend(h["train_time"] + h.get("val_time", 0.0) for h in run.history)
    losses = [h["val_loss"] if math.isfinite(h["val_loss"]) else math.inf for h in run.history]
    return losses[-1], min(losses), run.history[-1].get("val_accuracy", float("nan"))


def interpolated(scores: dict[float, float], lr: float) -> float:
    """The grid's score at `lr`, linear in log LR between the grid LRs around it; the end's score
    outside the grid; inf next to a diverged grid point."""
    xs = sorted(scores)
    if lr <= xs[0] or lr >= xs[-1]:
        return scores[xs[0] if lr <= xs[0] else xs[-1]]
    hi = next(x for x in xs if x >= lr)
    lo = xs[xs.index(hi) - 1]
    t = math.log(lr / lo) / math.log(hi / lo)
    return scores[hi] if t == 1 else (1 - t) * scores[lo] + t * scores[hi]


def cost_only(recipes: list[str], rule: str) -> int:
    """The finder's wall time in training epochs (median of 3 calls after a warm-up; an epoch: the median
    train + validation time of a 3-epoch run)."""
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as out:
        for recipe in recipes:
            base = {"train.threads": 1}
            goodfit.lr_find(recipe, base, rule=rule)
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                goodfit.lr_find(recipe, base, rule=rule)
                times.append(time.perf_counter() - t0)
            run = goodfit.run(recipe, {**base, "train.epochs": 3, "doctor.enabled": False}, out=out, progress=False)
            epoch = statistics.median(h["train_time"] + h.get("val_time", 0.0) for h in run.history)
            print(f"{recipe}: finder (rule {rule}) {statistics.median(times):.3f}s, one epoch {epoch:.3f}s -> "
                  f"{statistics.median(times) / epoch:.2f}x", flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", nargs="+", default=RECIPES)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--lo", type=float, default=-13 / 3, help="log10 of the smallest grid LR")
    ap.add_argument("--hi", type=float, default=0.0, help="log10 of the largest grid LR")
    ap.add_argument("--per-decade", type=int, default=3)
    ap.add_argument("--rule", default=DEFAULT_RULE, choices=list(RULES))
    ap.add_argument("--epochs", type=int, default=None, help="override every recipe's epochs (grid and finder alike)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--held-out", action="store_true", help="the held-out settings instead of --recipes "
                                                             "(informational, no pass/fail)")
    ap.add_argument("--cost-only", action="store_true", help="no grid: time the finder (with --rule) against one "
                                                              "training epoch, median of 3")
    args = ap.parse_args()
    if args.cost_only:
        return cost_only(args.recipes, args.rule)
    cases = [(r, r, {}, args.hi) for r in args.recipes]
    if args.held_out:
        cases = [(label, recipe, overrides, max(args.hi, hi)) for label, recipe, overrides, hi in HELD_OUT]
    if args.quick:
        cases, args.lo, args.per_decade = cases[:2], -4.0, 2
        args.epochs = args.epochs or 10
    torch.set_num_threads(1)
    budget = {"train.epochs": args.epochs} if args.epochs else {}
    print(f"grid: LRs from 10^{args.lo:.3g} to 10^{args.hi:.3g} or more, {args.per_decade} a decade; "
          f"seeds {args.seeds}; rule {args.rule}" + ("; held-out settings (informational)" if args.held_out else ""))
    rows, hits = [], 0
    with tempfile.TemporaryDirectory() as out:
        for label, recipe, overrides, hi in cases:
            extra = {**overrides, **budget}
            lrs = grid(args.lo, hi, args.per_decade)
            goodfit.lr_find(recipe, {"seed": args.seeds[0], "train.threads": 1, **extra}, rule=args.rule)  # warm-up
            t0 = time.perf_counter()
            found = [goodfit.lr_find(recipe, {"seed": s, "train.threads": 1, **extra}, rule=args.rule)
                     for s in args.seeds]
            finder_s = time.perf_counter() - t0
            suggestion = math.exp(statistics.fmean(math.log(r.suggestion) for r in found))
            epochs_cost = max(r.steps / r.steps_per_epoch for r in found)
            scores = {}
            EPOCH_SECONDS.clear()
            for lr in lrs:
                results = [train_score(recipe, lr, s, extra, out) for s in args.seeds]
                scores[lr] = tuple(statistics.fmean(r[i] for r in results) for i in range(3))
                print(f"  {label:<12} lr={lr:<9.3g} final val_loss={scores[lr][0]:.4f} (best epoch {scores[lr][1]:.4f}) "
                      f"final val_acc={scores[lr][2]:.4f}", flush=True)
            best_lr = min(lrs, key=lambda lr: scores[lr][0])
            best_by_epoch = min(lrs, key=lambda lr: scores[lr][1])
            ratio = suggestion / best_lr
            hit = 1 / 3 <= ratio <= 3
            hits += hit
            nearest = min(lrs, key=lambda lr: abs(math.log(lr / suggestion)))
            regret = scores[nearest][0] / scores[best_lr][0]
            final = {lr: v[0] for lr, v in scores.items()}
            interp_regret = interpolated(final, suggestion) / scores[best_lr][0]
            per_seed = ", ".join(f"{r.suggestion:.3g}" for r in found)
            others = ", ".join(f"{name} {math.exp(statistics.fmean(math.log(r.suggestions[name]) for r in found)) / best_lr:.2f}"
                               for name in found[0].suggestions if name != args.rule)
            print(f"{label}: suggestion {suggestion:.3g} (per seed {per_seed}; {epochs_cost:.2f} epoch, "
                  f"{finder_s / len(found):.1f}s each), grid-best {best_lr:.3g} (final val_loss {scores[best_lr][0]:.4f}; "
                  f"by best-epoch loss it would be {best_by_epoch:.3g}), "
                  f"ratio {ratio:.2f} -> {'within 3x' if hit else 'MISS'}; val loss at the grid LR nearest the "
                  f"suggestion / best = {regret:.2f}; val-loss regret (interpolated at the suggestion) "
                  f"{interp_regret:.2f}; other rules' ratios: {others}", flush=True)
            # the finder reads at most one epoch of training data; its held-out probes add forward passes: in time,
            # it costs this many training epochs (median epoch of the grid runs, validation included)
            epoch_s = statistics.median(EPOCH_SECONDS) if EPOCH_SECONDS else float("nan")
            time_cost = finder_s / len(found) / epoch_s
            print(f"{label}: the finder takes {finder_s / len(found):.2f}s = {time_cost:.1f}x the time of one training "
                  f"epoch ({epoch_s:.3f}s, validation included; model build included in the finder's time)", flush=True)
            rows.append((label, suggestion, best_lr, ratio, epochs_cost, regret, interp_regret, time_cost))
    print()
    print("| recipe | finder suggestion | grid-best LR | ratio | within 3x | val loss at nearest grid LR / best | "
          "val-loss regret | finder cost: epochs of training data | finder time / one epoch's |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, s, b, r, cost, regret, interp_regret, time_cost in rows:
        print(f"| {label} | {s:.3g} | {b:.3g} | {r:.2f} | {'yes' if 1 / 3 <= r <= 3 else 'no'} | {regret:.2f} | "
              f"{interp_regret:.2f} | {cost:.2f} | {time_cost:.1f}x |")
    what = "held-out settings" if args.held_out else "recipes"
    print(f"\n{hits}/{len(rows)} {what} within 3x of the grid-best LR")
    if args.held_out:
        print("(informational: settings the rule was not chosen on; not a pass/fail)")
        return 0
    return 0 if hits == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
