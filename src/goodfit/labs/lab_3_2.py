"""3.2 Regression metrics: R² < 0 below the mean baseline, RMSE vs MAE under outliers, R² vs explained variance."""
from __future__ import annotations

import math

import numpy as np

from goodfit.labs import Lab, LabContext

ANSWER = r"""
With targets yᵢ, predictions ŷᵢ, residuals eᵢ = yᵢ − ŷᵢ, i = 1…n, and Var the population variance:

- **MSE** = (1/n) Σ eᵢ², in squared units; the loss most regressors minimize. It splits into
  MSE = Var(e) + ē²: the spread of the errors plus the square of their mean (the bias).
- **RMSE** = √MSE, in the target's units. Squaring makes it dominated by the largest errors.
- **MAE** = (1/n) Σ |eᵢ|, in the target's units; every error counts linearly, so it is robust to a
  few huge ones. Always MAE ≤ RMSE ≤ √n · MAE: RMSE/MAE is ≈ √(π/2) ≈ 1.25 for Gaussian errors
  and grows when a few errors dominate. MSE is minimized by the conditional mean, MAE by the median.
- **MAPE** = (1/n) Σ |eᵢ| / |yᵢ| (a fraction; scikit-learn and goodfit guard yᵢ = 0 with machine ε):
  scale-free, so comparable across series, but it explodes for targets near 0, is not invariant to
  a shift of the target's origin, and punishes over-prediction more (under-predicting a positive
  target costs at most 100 %, over-predicting is unbounded).
- **R²** = 1 − SS_res/SS_tot = 1 − MSE / Var(y): the fraction of the target's variance explained,
  relative to the baseline "predict the mean of the evaluated targets" (R² = 0). It is 1 for a
  perfect fit, and **negative whenever the model's MSE exceeds Var(y)**, i.e. whenever it is worse
  than that constant — e.g. a model with no information that still spreads its predictions
  (shuffled predictions: E[MSE] = Var(y) + Var(ŷ) + (ȳ − mean ŷ)²), or even the *training* mean,
  which out of sample scores −(ȳ_train − ȳ_test)²/Var(y_test) ≤ 0. R² is not a square of
  anything and has no lower bound.
- **Explained variance** EV = 1 − Var(e)/Var(y) ignores the mean of the residuals:
  EV − R² = ē²/Var(y) ≥ 0. A constant bias b (ŷ + b) leaves EV unchanged and lowers R² by
  (b² − 2bē)/Var(y); EV measures how well predictions *co-vary* with the target, R² how close they are.

Which to report: RMSE when large errors are disproportionately costly (and as the unit-bearing
version of the training loss), MAE when every unit of error costs the same or outliers are
expected, R² to compare across targets of different scale, MAPE only for strictly positive targets
far from 0; report EV next to R² only to diagnose bias (EV ≫ R² ⇒ shift the predictions).
goodfit's functions take (preds, target) and equal scikit-learn's values (multi-output: the
uniform average of the per-column values, RMSE = mean of per-column RMSEs).

**The lab.** scikit-learn's diabetes data (442 patients, target 25…346), a linear regression
fitted on a random 70 % and scored on the other 30 %, repeated over several splits.
"""

SPLITS_QUICK, SPLITS_FULL = 5, 50
PERMUTATIONS = 50            # shuffled predictions per split
OUTLIERS = 2                 # test samples on which the model fails badly ...
MAGNITUDE = 10.0             # ... by this many clean RMSEs
BIAS = 0.5                   # constant bias, in units of the test target's standard deviation
# Tolerances. Equality with scikit-learn: |diff| ≤ 1e-9 · max(1, |value|) (MSE is in squared units, ~3e3).
# From 100 splits: the model's R² was 0.32–0.60; the highest R² of 51 shuffles per split was −0.07; their mean
# matched −(Var ŷ + (ȳ − mean ŷ)²)/Var y within 0.043; 2 outliers of 10 RMSE raised RMSE by 43–76 % and MAE by
# 13–19 % (ratio ≥ 3.1); a bias of 0.5 σ_y lowered R² by 0.03–0.49 (the −2bē term varies with the split).
EXACT = 1e-9
SHUFFLE_TOL = 0.06
RMSE_OVER_MAE = 2.0          # RMSE's relative rise must be at least this many times MAE's


def reg_metrics(pred, y) -> dict[str, float]:
    import goodfit.metrics as gm

    return {"MSE": gm.mse(pred, y), "RMSE": gm.rmse(pred, y), "MAE": gm.mae(pred, y), "MAPE": gm.mape(pred, y),
            "R²": gm.r2(pred, y), "EV": gm.explained_variance(pred, y)}


def sk_metrics(pred, y) -> dict[str, float]:
    from sklearn import metrics as skm

    return {"MSE": skm.mean_squared_error(y, pred), "RMSE": skm.root_mean_squared_error(y, pred),
            "MAE": skm.mean_absolute_error(y, pred), "MAPE": skm.mean_absolute_percentage_error(y, pred),
            "R²": skm.r2_score(y, pred), "EV": skm.explained_variance_score(y, pred)}


def split(x, y, seed: int):
    perm = np.random.default_rng([32, seed]).permutation(len(y))
    cut = int(0.7 * len(y))
    return x[perm[:cut]], y[perm[:cut]], x[perm[cut:]], y[perm[cut:]]


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import LinearRegression

    data = load_diabetes()
    x, y_all = data.data, data.target.astype(np.float64)
    n_splits = SPLITS_QUICK if ctx.quick else SPLITS_FULL
    ctx.log(f"diabetes: {len(y_all)} samples, {n_splits} random 70/30 splits, linear regression")

    keys = ["MSE", "RMSE", "MAE", "MAPE", "R²", "EV"]
    per = {}            # case -> list of metric dicts, one per split
    ref_gap = 0.0       # max relative |goodfit − sklearn|
    r2_formula_gap, shuffle_gap, ev_gap, bias_formula_gap, sign_ok = 0.0, 0.0, 0.0, 0.0, True
    shuffled_all_negative = True
    outlier_rows, first = [], None
    for seed in range(n_splits):
        xtr, ytr, xte, y = split(x, y_all, seed)
        pred = LinearRegression().fit(xtr, ytr).predict(xte)
        rng = np.random.default_rng([321, seed])
        var_y = float(np.var(y))
        e = y - pred
        clean_rmse = float(np.sqrt(np.mean(e**2)))
        bad = pred.copy()
        idx = rng.choice(len(y), OUTLIERS, replace=False)
        bad[idx] += MAGNITUDE * clean_rmse * rng.choice([-1.0, 1.0], OUTLIERS)
        bias = BIAS * math.sqrt(var_y)
        cases = {
            "model": pred,
            "test mean (baseline)": np.full_like(y, y.mean()),
            "train mean": np.full_like(y, ytr.mean()),
            "shuffled predictions": rng.permutation(pred),
            "reflected (2ȳ_train − ŷ)": 2 * ytr.mean() - pred,
            f"{OUTLIERS} outliers of {MAGNITUDE:g} RMSE": bad,
            f"biased (+{BIAS:g} σ_y)": pred + bias,
        }
        baseline_mse = var_y
        for name, p in cases.items():
            ours = reg_metrics(p, y)
            ref = sk_metrics(p, y)
            ref_gap = max(ref_gap, *[abs(ours[k] - ref[k]) / max(1.0, abs(ref[k])) for k in keys])
            per.setdefault(name, []).append(ours)
            # R² < 0 exactly when the model's MSE exceeds the mean predictor's (= Var y); the test mean
            # itself (MSE = Var y up to rounding) is the boundary and is checked separately below
            if abs(ours["MSE"] / baseline_mse - 1) > 1e-9:
                sign_ok &= (ours["R²"] < 0) == (ours["MSE"] > baseline_mse)
            # EV − R² = ē² / Var(y)
            ev_gap = max(ev_gap, abs((ours["EV"] - ours["R²"]) - np.mean(y - p) ** 2 / var_y))
        r2_formula_gap = max(r2_formula_gap, abs(per["train mean"][-1]["R²"] + (ytr.mean() - y.mean()) ** 2 / var_y),
                             abs(per["test mean (baseline)"][-1]["R²"]))
        # many shuffles: the mean R² against E[MSE] = Var y + Var ŷ + (ȳ − mean ŷ)²
        shuffles = [reg_metrics(rng.permutation(pred), y)["R²"] for _ in range(PERMUTATIONS)]
        shuffled_all_negative &= max(shuffles) < 0
        expected = -(np.var(pred) + (y.mean() - pred.mean()) ** 2) / var_y
        shuffle_gap = max(shuffle_gap, abs(np.mean(shuffles) - expected))
        # a constant bias: R² drops by (b² − 2bē)/Var y, EV does not move
        m, mb = per["model"][-1], per[f"biased (+{BIAS:g} σ_y)"][-1]
        bias_formula_gap = max(bias_formula_gap, abs((m["R²"] - mb["R²"]) - (bias**2 - 2 * bias * e.mean()) / var_y))
        ob = per[f"{OUTLIERS} outliers of {MAGNITUDE:g} RMSE"][-1]
        outlier_rows.append((ob["RMSE"] / m["RMSE"] - 1, ob["MAE"] / m["MAE"] - 1, m["RMSE"] / m["MAE"],
                             ob["RMSE"] / ob["MAE"], len(y)))
        if first is None:
            first = {"y": y, "pred": pred, "ytr": ytr, "var_y": var_y, "idx": idx}

    names = list(per)
    mean = {c: {k: float(np.mean([r[k] for r in per[c]])) for k in keys} for c in names}
    ctx.table(f"test-set metrics, mean over {n_splits} split(s) (MAPE as a fraction)", ["predictions", *keys],
              [[c, *[mean[c][k] for k in keys]] for c in names])

    # ------------------------------------------------------------ R² < 0
    r2_model = [r["R²"] for r in per["model"]]
    ctx.measure("R² of the linear model (mean over splits)", mean["model"]["R²"])
    ctx.measure("R² of shuffled predictions (mean)", mean["shuffled predictions"]["R²"])
    ctx.measure("R² of reflected predictions (mean)", mean["reflected (2ȳ_train − ŷ)"]["R²"])
    ctx.measure("R² of the training mean (mean)", mean["train mean"]["R²"])
    ctx.check(min(r2_model) > 0.2, "the linear model explains part of the variance (R² > 0.2 on every split)",
              f"min {min(r2_model):.3f}")
    worse = [r["R²"] for c in ("shuffled predictions", "reflected (2ȳ_train − ŷ)") for r in per[c]]
    ctx.check(max(worse) < 0 and shuffled_all_negative,
              f"models worse than the mean have R² < 0: shuffled predictions (no information, full spread; "
              f"{PERMUTATIONS + 1} shuffles per split) and reflected predictions, on every split",
              f"max R² {max(worse):.3f}")
    ctx.check(sign_ok, "R² < 0 exactly when MSE > Var(y), the MSE of predicting the test mean (all other cases, "
              "all splits)")
    ctx.check(r2_formula_gap < EXACT, "the test mean scores R² = 0; the training mean scores "
              "R² = −(ȳ_train − ȳ_test)²/Var(y_test) ≤ 0 (to 1e-9)", f"max |diff| {r2_formula_gap:.1e}")
    ctx.check(shuffle_gap < SHUFFLE_TOL, f"mean R² of {PERMUTATIONS} shuffles ≈ −(Var ŷ + (ȳ − mean ŷ)²)/Var y "
              f"(tolerance {SHUFFLE_TOL})", f"max |diff| {shuffle_gap:.3f}")

    # ------------------------------------------------------------ RMSE vs MAE under outliers
    rise = np.array(outlier_rows)
    ctx.measure(f"RMSE rise with {OUTLIERS} outliers of {MAGNITUDE:g} RMSE (mean, relative)", float(rise[:, 0].mean()))
    ctx.measure("MAE rise with the same outliers (mean, relative)", float(rise[:, 1].mean()))
    ctx.measure("RMSE/MAE clean → with outliers (mean)", f"{rise[:, 2].mean():.3f} → {rise[:, 3].mean():.3f}")
    ctx.check(bool(np.all(rise[:, 0] >= RMSE_OVER_MAE * rise[:, 1])) and bool(np.all(rise[:, 1] > 0)),
              f"{OUTLIERS} large errors raise RMSE at least {RMSE_OVER_MAE:g}× as much (relatively) as MAE, "
              "every split",
              f"min ratio {np.min(rise[:, 0] / rise[:, 1]):.2f}")
    ctx.check(bool(np.all((rise[:, 2:4] >= 1) & (rise[:, 2:4] <= np.sqrt(rise[:, 4:5])))),
              "1 ≤ RMSE/MAE ≤ √n in every case")
    # sweep of the outliers' size on the first split
    y, pred = first["y"], first["pred"]
    clean = reg_metrics(pred, y)
    mags = [0, 1, 2, 5, 10, 20, 50]
    sweep = []
    for mag in mags:
        p = pred.copy()
        p[first["idx"]] += mag * clean["RMSE"]
        s = reg_metrics(p, y)
        sweep.append([mag, s["RMSE"], s["MAE"], s["RMSE"] / s["MAE"], s["R²"]])
    ctx.table(f"split 0: {OUTLIERS} errors of m × RMSE added (n = {len(y)})", ["m", "RMSE", "MAE", "RMSE/MAE", "R²"],
              sweep)

    # ------------------------------------------------------------ explained variance vs R² under a bias
    biased = f"biased (+{BIAS:g} σ_y)"
    ev_same = max(abs(a["EV"] - b["EV"]) for a, b in zip(per["model"], per[biased]))
    r2_drop = [a["R²"] - b["R²"] for a, b in zip(per["model"], per[biased])]
    ctx.measure(f"R² drop from a bias of {BIAS:g} σ_y (mean)", float(np.mean(r2_drop)))
    ctx.check(ev_same < 1e-9 and min(r2_drop) > 0,
              f"a constant bias of {BIAS:g} σ_y leaves explained variance unchanged (1e-9) but lowers R² (every split)",
              f"max |ΔEV| {ev_same:.1e}, R² drop {min(r2_drop):.3f}…{max(r2_drop):.3f}")
    ctx.check(bias_formula_gap < EXACT and ev_gap < EXACT,
              "R² drop = (b² − 2bē)/Var y and EV − R² = ē²/Var y, in every case (to 1e-9)",
              f"{bias_formula_gap:.1e}, {ev_gap:.1e}")
    biases = np.linspace(-1, 1, 21)
    bias_curve = [reg_metrics(pred + b * math.sqrt(first["var_y"]), y) for b in biases]

    # ------------------------------------------------------------ MAPE: scale-free, not shift-free
    base = reg_metrics(pred, y)
    scaled = reg_metrics(pred * 1000, y * 1000)
    shifted = reg_metrics(pred + 1000, y + 1000)
    ctx.table("MAPE vs MAE when the target's units change (split 0)", ["target", "MAE", "MAPE", "R²"],
              [["y", base["MAE"], base["MAPE"], base["R²"]], ["1000 · y", scaled["MAE"], scaled["MAPE"], scaled["R²"]],
               ["y + 1000", shifted["MAE"], shifted["MAPE"], shifted["R²"]]])
    ctx.check(abs(scaled["MAPE"] / base["MAPE"] - 1) < 1e-9 and abs(scaled["MAE"] / base["MAE"] / 1000 - 1) < 1e-9
              and abs(shifted["MAE"] / base["MAE"] - 1) < 1e-9 and shifted["MAPE"] < base["MAPE"] / 4,
              "MAPE is scale-free (×1000: same MAPE, MAE ×1000) but not shift-free (+1000: same MAE, MAPE ÷ > 4)",
              f"MAPE {base['MAPE']:.4f} → {scaled['MAPE']:.4f} (×1000) → {shifted['MAPE']:.4f} (+1000)")

    # ------------------------------------------------------------ equality with scikit-learn
    two = np.stack([pred, pred + BIAS * math.sqrt(first["var_y"])], 1)
    y2 = np.stack([y, y], 1)
    rows, gaps = [], []
    for name, (p, t) in {"model": (pred, y), "shuffled": (np.random.default_rng(322).permutation(pred), y),
                         "outliers (m = 50)": (pred + np.isin(np.arange(len(y)), first["idx"]) * 50 * clean["RMSE"], y),
                         "1000 · y": (pred * 1000, y * 1000), "2 outputs (model, biased)": (two, y2)}.items():
        ours, ref = reg_metrics(p, t), sk_metrics(p, t)
        gap = max(abs(ours[k] - ref[k]) / max(1.0, abs(ref[k])) for k in keys)
        gaps.append(gap)
        rows += [[name, k, ours[k], ref[k], f"{abs(ours[k] - ref[k]):.1e}"] for k in keys]
    ctx.table("goodfit.metrics vs scikit-learn (split 0)",
              ["predictions", "metric", "goodfit", "scikit-learn", "|diff|"], rows)
    worst = max(ref_gap, *gaps)
    ctx.measure("max |goodfit − scikit-learn| / max(1, |value|), all cases and splits", worst)
    ctx.check(worst <= EXACT, f"every value equals scikit-learn's (|diff| ≤ {EXACT:g} · max(1, |value|); "
              f"{len(names) * len(keys) * n_splits + len(rows)} comparisons, incl. a 2-output case)", f"{worst:.1e}")

    # ------------------------------------------------------------ figure
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4.6))
    shown = [c for c in names if "outliers" not in c and "biased" not in c]
    vals = [[r["R²"] for r in per[c]] for c in shown]
    ax1.bar(range(len(shown)), [np.mean(v) for v in vals], yerr=[np.std(v) for v in vals], capsize=3,
            color=["tab:green" if np.mean(v) > 0 else "tab:red" for v in vals])
    ax1.axhline(0, color="k", lw=0.8)
    ax1.set_xticks(range(len(shown)), [c.split(" (")[0].replace(" ", "\n", 1) for c in shown], fontsize=8)
    ax1.set_ylabel("R² (mean ± sd over splits)")
    ax1.set_title("R² < 0: worse than predicting the mean")
    sw = np.array(sweep)
    ax2.plot(sw[:, 0], sw[:, 1] / clean["RMSE"], "o-", label="RMSE / clean RMSE")
    ax2.plot(sw[:, 0], sw[:, 2] / clean["MAE"], "s-", label="MAE / clean MAE")
    ax2.plot(sw[:, 0], sw[:, 3], "^:", color="grey", label="RMSE / MAE")
    ax2.set_xlabel(f"size m of {OUTLIERS} errors (× clean RMSE), n = {len(y)}")
    ax2.set_title("outliers: RMSE grows far faster than MAE")
    ax2.legend(fontsize=8)
    ax3.plot(biases, [b["R²"] for b in bias_curve], "o-", label="R²")
    ax3.plot(biases, [b["EV"] for b in bias_curve], "s-", label="explained variance")
    ax3.set_xlabel("constant bias added to the predictions (× σ_y)")
    ax3.set_title("a bias costs R², not explained variance")
    ax3.legend(fontsize=8)
    ctx.figure(fig, "regression_metrics")


LAB = Lab(id="3.2", title="Regression metrics",
          question="回归任务评估指标（RMSE、R² 等） — Regression metrics: MSE, RMSE, MAE, MAPE, R², explained variance.",
          answer=ANSWER, run=run, uses="metrics (goodfit.metrics)")
