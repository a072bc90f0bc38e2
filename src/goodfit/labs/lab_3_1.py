"""3.1 Classification metrics: on 95/5 data accuracy flatters a useless classifier; F1, MCC and AP do not."""
from __future__ import annotations

import math
import warnings

import numpy as np

from goodfit.labs import Lab, LabContext

ANSWER = r"""
Everything below the scores starts from the **confusion matrix** at a threshold t (predict positive
when p̂ ≥ t): TP, FP, FN, TN for one positive class; for K classes a K×K matrix C (rows = truth,
columns = prediction), each class in turn playing "positive".

- **Accuracy** = (TP + TN)/N. **Balanced accuracy** = mean per-class recall = (TPR + TNR)/2 in the
  binary case: every class counts equally, so a constant prediction scores 1/K.
- **Precision** P = TP/(TP + FP) ("when it says positive, how often is it right"), **recall**
  R = TP/(TP + FN) ("how many positives it finds"), **F1** = 2PR/(P + R) = 2TP/(2TP + FP + FN)
  (F_β = (1 + β²)PR/(β²P + R) weights recall β times as much). TN appears in none of them, so they
  cannot be inflated by a large easy majority. A 0/0 (nothing predicted positive) is `zero_division`.
- Averages for K classes: **macro** = plain mean over classes (rare classes count fully),
  **weighted** = mean weighted by support, **micro** = from the pooled counts, which for
  single-label data equals accuracy (every error is one FP and one FN).
- **MCC** = (TP·TN − FP·FN)/√((TP+FP)(TP+FN)(TN+FP)(TN+FN)) ∈ [−1, 1], the correlation between
  prediction and truth: 1 perfect, 0 for a constant or random predictor, whatever the imbalance.
- **Cohen's κ** = (p_o − p_e)/(1 − p_e): observed agreement p_o = accuracy, corrected for the
  agreement p_e = Σ_k (row_k/N)(col_k/N) expected by chance from the marginals (linear/quadratic
  weights penalize distant ordinal classes more).
- **ROC-AUC** = area under TPR vs FPR over all thresholds = P(s⁺ > s⁻) (Mann–Whitney), threshold-
  free; 0.5 = chance whatever the prevalence, so on rare positives it can look good while most
  alarms are false (FPR is divided by the huge negative count).
- **PR-AUC / average precision** AP = Σ_n (R_n − R_{n−1}) P_n over the thresholds: its chance level
  is the prevalence π (a constant or random score has precision π everywhere), so it shows how
  hard the rare class is. **Top-k accuracy**: the target is among the k highest scores.
- **Log loss** = −(1/N) Σ_i log p̂_{i, y_i}, a proper scoring rule (minimized by the true
  probabilities); **ECE** = Σ_b (n_b/N)·|acc_b − conf_b| over equal-width confidence bins, the
  average gap between stated confidence and observed frequency. AUROC and AP only rank; any
  monotone rescaling of the scores leaves them unchanged but changes log loss and ECE.

**Imbalance.** With prevalence π = 5 %, "always negative" has accuracy 1 − π = 0.95 yet finds
nothing: recall = F1 = 0, MCC = κ = 0, balanced accuracy 0.5, AP = π. Accuracy rewards the majority
class; on rare positives report F1 / MCC / balanced accuracy at the operating threshold and AP
(with π next to it) for the ranking.

**Threshold moving.** Raising t shrinks the predicted-positive set (the sets are nested), so recall
can only fall; the ones dropped are the least confident, so precision usually rises. The PR curve
is this trade; pick t by the costs (for calibrated p̂, Bayes' rule predicts positive when
p̂ ≥ C_FP/(C_FP + C_FN)), or by the F1-optimal point, never by accuracy on imbalanced data.

goodfit's functions take (preds, target), the reverse of scikit-learn's (y_true, y_pred), and return
scikit-learn's values; the lab checks every one against scikit-learn on its own data.

**The lab.** Two Gaussian classes in 10 dimensions, mean distance Δ = 2.5, prevalence π = 5 %;
a logistic regression fitted on one half, scored on the other. Compared: the constant majority
classifier, a random scorer, the model at t = 0.5, and a "screening" model at t = π. Then a
threshold sweep, a temperature sweep (calibration), and a 4-class imbalanced problem for the
multiclass averages, top-k and the multiclass scores.
"""

PI = 0.05        # prevalence of the positive (minority) class
DIM = 10
DELTA = 2.5      # distance between the class means (Bayes AUROC = Φ(Δ/√2) ≈ 0.962)
# Tolerances, set from 10 seeds × (2,000 and 10,000 test samples): the model at t = 0.5 gained 0.014–0.022
# accuracy over the constant classifier but reached F1 0.54–0.66, MCC 0.55–0.66, AP 0.66–0.75 (gains ≥ 29× the
# accuracy gain); at t = π its accuracy was 0.04–0.07 below the constant's with MCC 0.46–0.52, recall 0.80–0.92;
# from t = 0.1 to 0.7 precision rose 0.37–0.53 and recall fell 0.38–0.48. One random score's AP/π ranged
# 0.81–1.77 at 2,000 samples (≈ 100 positives), the mean of 20 draws 1.02–1.12 (small-sample bias above π).
MAX_ACC_GAIN = 0.05   # accuracy barely moves ...
MIN_SCORE = 0.4       # ... while F1, MCC and AP reach at least this,
GAIN_RATIO = 10.0     # and gain at least this many times the accuracy gain
RANDOM_DRAWS = 20     # random score vectors averaged for the chance level of AP
RANDOM_AP_TOL = 0.2   # |mean AP(random) / π − 1|
T_LOW, T_HIGH, MIN_TRADE = 0.1, 0.7, 0.2
EXACT = 1e-9          # |goodfit − scikit-learn|
PRIORS = np.array([0.55, 0.25, 0.13, 0.07])   # the 4-class problem


def binary_data(seed: int, n: int):
    """(x_train, y_train, x_test, y_test): x | y ~ N(y·μ, I), ‖μ‖ = Δ, P(y = 1) = π."""
    rng = np.random.default_rng([31, seed])
    y = (rng.random(2 * n) < PI).astype(np.int64)
    x = rng.standard_normal((2 * n, DIM)) + y[:, None] * np.full(DIM, DELTA / math.sqrt(DIM))
    return x[:n], y[:n], x[n:], y[n:]


def multiclass_data(seed: int, n: int):
    rng = np.random.default_rng([311, seed])
    means = rng.standard_normal((len(PRIORS), 8)) * 1.1
    y = rng.choice(len(PRIORS), size=2 * n, p=PRIORS)
    x = rng.standard_normal((2 * n, 8)) + means[y]
    return x[:n], y[:n], x[n:], y[n:]


def ece_reference(correct: np.ndarray, confidence: np.ndarray, n_bins: int = 15) -> float:
    """ECE from scikit-learn's calibration_curve (uniform bins), weighted by the bins' counts."""
    from sklearn.calibration import calibration_curve

    prob_true, prob_pred = calibration_curve(correct, confidence, n_bins=n_bins, strategy="uniform")
    counts = np.bincount(np.searchsorted(np.linspace(0, 1, n_bins + 1)[1:-1], confidence), minlength=n_bins)
    counts = counts[counts > 0]
    return float(np.sum(counts * np.abs(prob_true - prob_pred)) / len(confidence))


def label_scores(pred, y) -> dict[str, float]:
    import goodfit.metrics as gm

    return {"accuracy": gm.accuracy(pred, y), "balanced acc.": gm.balanced_accuracy(pred, y),
            "precision": gm.precision(pred, y), "recall": gm.recall(pred, y), "F1": gm.f1(pred, y),
            "MCC": gm.mcc(pred, y), "kappa": gm.cohen_kappa(pred, y)}


def run(ctx: LabContext) -> None:
    from sklearn.exceptions import UndefinedMetricWarning

    with warnings.catch_warnings():  # scikit-learn warns about the constant classifier's 0/0 precision
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        _run(ctx)


def _run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt
    from sklearn import metrics as skm
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import label_binarize

    import goodfit.metrics as gm

    seeds = [0] if ctx.quick else [0, 1, 2]
    n = 2000 if ctx.quick else 10000
    ctx.log(f"binary: {len(seeds)} seed(s), {n} training and {n} test samples each, π = {PI}, Δ = {DELTA}")

    # ------------------------------------------------------------ 1. imbalance: constant vs random vs model
    per_seed, first = [], None
    for seed in seeds:
        xtr, ytr, xte, yte = binary_data(seed, n)
        # contiguous: torch.searchsorted (ECE's binning) warns about a strided column of predict_proba
        p = np.ascontiguousarray(LogisticRegression().fit(xtr, ytr).predict_proba(xte)[:, 1])
        pi = float(yte.mean())
        rng = np.random.default_rng([312, seed])
        const = np.zeros_like(yte)
        cases = {"constant 'negative'": (const, np.zeros(len(yte))),
                 "random scores": ((rng.random(len(yte)) >= 0.5).astype(np.int64), rng.random(len(yte))),
                 "model, t = 0.5": ((p >= 0.5).astype(np.int64), p),
                 "model, t = π (screening)": ((p >= pi).astype(np.int64), p)}
        row = {"pi": pi, "random AP": float(np.mean([gm.average_precision(rng.random(len(yte)), yte, logits=False)
                                                     for _ in range(RANDOM_DRAWS)]))}
        for name, (pred, score) in cases.items():
            s = label_scores(pred, yte)
            s["AUROC"] = gm.auroc(score, yte, logits=False)
            s["AP"] = gm.average_precision(score, yte, logits=False)
            row[name] = s
        per_seed.append(row)
        if first is None:
            first = {"y": yte, "p": p, "pi": pi, "cases": cases}

    names = list(per_seed[0])[2:]
    keys = list(per_seed[0][names[0]])
    mean = {c: {k: float(np.mean([r[c][k] for r in per_seed])) for k in keys} for c in names}
    pi_mean = float(np.mean([r["pi"] for r in per_seed]))
    ctx.measure("test prevalence π (mean over seeds)", pi_mean)
    ctx.table(f"binary test set, π ≈ {pi_mean:.3f} (mean over {len(seeds)} seed(s))",
              ["metric", "constant", "random", "model t=0.5", "model t=π"],
              [[k, *[mean[c][k] for c in names]] for k in keys])

    const_ok = all(abs(r["constant 'negative'"]["accuracy"] - (1 - r["pi"])) < 1e-12
                   and r["constant 'negative'"]["F1"] == 0 and r["constant 'negative'"]["MCC"] == 0
                   and r["constant 'negative'"]["kappa"] == 0
                   and abs(r["constant 'negative'"]["balanced acc."] - 0.5) < 1e-12
                   and abs(r["constant 'negative'"]["AUROC"] - 0.5) < 1e-12
                   and abs(r["constant 'negative'"]["AP"] - r["pi"]) < 1e-12 for r in per_seed)
    ctx.check(const_ok, "the constant majority classifier scores accuracy = 1 − π (≈ 0.95) but F1 = MCC = κ = 0, "
              "balanced accuracy = AUROC = 0.5 and AP = π (every seed, to 1e-12)",
              f"accuracy {mean[names[0]]['accuracy']:.4f}, AP {mean[names[0]]['AP']:.4f}")
    rand_ap = [r["random AP"] / r["pi"] for r in per_seed]
    ctx.check(all(abs(v - 1) <= RANDOM_AP_TOL for v in rand_ap),
              f"random scores have AP ≈ prevalence (mean of {RANDOM_DRAWS} draws, |AP/π − 1| ≤ {RANDOM_AP_TOL}): "
              "PR-AUC's chance level is π, where ROC-AUC's is 0.5", "AP/π = " + ", ".join(f"{v:.2f}" for v in rand_ap))

    model, const, screen = "model, t = 0.5", "constant 'negative'", "model, t = π (screening)"
    rows_ok, details = True, []
    for r in per_seed:
        acc_gain = r[model]["accuracy"] - r[const]["accuracy"]
        gains = {k: r[model][k] - r[const][k] for k in ("F1", "MCC", "AP")}
        rows_ok &= 0 < acc_gain <= MAX_ACC_GAIN and all(r[model][k] >= MIN_SCORE for k in gains) \
            and all(g >= GAIN_RATIO * acc_gain for g in gains.values())
        details.append(f"Δacc {acc_gain:.3f}; ΔF1 {gains['F1']:.3f}, ΔMCC {gains['MCC']:.3f}, ΔAP {gains['AP']:.3f}")
    ctx.measure("model (t = 0.5) accuracy gain over the constant classifier",
                mean[model]["accuracy"] - mean[const]["accuracy"])
    ctx.measure("model (t = 0.5) F1 / MCC / AP", f"{mean[model]['F1']:.3f} / {mean[model]['MCC']:.3f} / "
                                                 f"{mean[model]['AP']:.3f}")
    ctx.check(rows_ok, f"a real model beats the constant one by ≤ {MAX_ACC_GAIN} accuracy but reaches F1, MCC, AP "
              f"≥ {MIN_SCORE}, gains ≥ {GAIN_RATIO:g}× the accuracy gain (every seed)", "; ".join(details))
    ctx.check(all(r[screen]["accuracy"] < r[const]["accuracy"] and r[screen]["MCC"] >= 0.3
                  and r[screen]["recall"] >= 0.7 and r[screen]["balanced acc."] > r[const]["balanced acc."] + 0.3
                  for r in per_seed),
              "accuracy even ranks the useless constant classifier above the screening model (t = π, recall ≥ 0.7, "
              "MCC ≥ 0.3): accuracy misleads, MCC and balanced accuracy do not",
              f"accuracy {mean[screen]['accuracy']:.3f} < {mean[const]['accuracy']:.3f}; "
              f"MCC {mean[screen]['MCC']:.3f}, "
              f"recall {mean[screen]['recall']:.3f}")

    # ------------------------------------------------------------ 2. threshold moving
    y, p = first["y"], first["p"]
    thresholds = np.round(np.arange(0.02, 0.99, 0.02), 2)
    sweep = {"precision": [], "recall": [], "F1": [], "accuracy": [], "MCC": [], "predicted +": []}
    for t in thresholds:
        pred = (p >= t).astype(np.int64)
        sweep["precision"].append(gm.precision(pred, y))
        sweep["recall"].append(gm.recall(pred, y))
        sweep["F1"].append(gm.f1(pred, y))
        sweep["accuracy"].append(gm.accuracy(pred, y))
        sweep["MCC"].append(gm.mcc(pred, y))
        sweep["predicted +"].append(int(pred.sum()))
    sweep = {k: np.array(v) for k, v in sweep.items()}
    shown = [0.05, T_LOW, 0.2, 0.3, 0.5, T_HIGH, 0.9]
    at = {t: int(np.argmin(np.abs(thresholds - t))) for t in shown}
    ctx.table("threshold sweep of the model (seed 0)", ["threshold", "predicted +", "precision", "recall", "F1",
                                                         "MCC", "accuracy"],
              [[t, int(sweep["predicted +"][i]), *[float(sweep[k][i]) for k in ("precision", "recall", "F1", "MCC",
                                                                                 "accuracy")]] for t, i in at.items()])
    best = int(np.argmax(sweep["F1"]))
    ctx.measure("F1-optimal threshold on the sweep", float(thresholds[best]))
    ctx.check(bool(np.all(np.diff(sweep["recall"]) <= 0)), f"recall is non-increasing in the threshold "
              f"({len(thresholds)} thresholds 0.02…0.98)")
    dp = sweep["precision"][at[T_HIGH]] - sweep["precision"][at[T_LOW]]
    dr = sweep["recall"][at[T_LOW]] - sweep["recall"][at[T_HIGH]]
    ctx.check(dp >= MIN_TRADE and dr >= MIN_TRADE, f"moving t from {T_LOW} to {T_HIGH} trades recall for precision "
              f"(precision +≥ {MIN_TRADE}, recall −≥ {MIN_TRADE})", f"precision +{dp:.3f}, recall −{dr:.3f}")
    enough = sweep["predicted +"] >= 20
    rho = float(np.corrcoef(np.argsort(np.argsort(thresholds[enough])),
                            np.argsort(np.argsort(sweep["precision"][enough])))[0, 1])
    ctx.measure("Spearman ρ(threshold, precision), thresholds with ≥ 20 predicted positives", rho)
    ctx.check(rho >= 0.8, "precision tends to rise with the threshold (Spearman ρ ≥ 0.8; not guaranteed pointwise)",
              f"ρ = {rho:.3f}")
    acc_best = int(np.argmax(sweep["accuracy"]))
    ctx.log(f"accuracy varies only {sweep['accuracy'].min():.3f}–{sweep['accuracy'].max():.3f} over the sweep "
            f"(best at t = {thresholds[acc_best]:.2f}), F1 {sweep['F1'].min():.3f}–{sweep['F1'].max():.3f}")

    # ------------------------------------------------------------ 3. calibration: ranking vs probability metrics
    logit = np.log(p) - np.log1p(-p)
    cal_rows, cal = [], {}
    for temp in (0.33, 1.0, 3.0):
        z = logit * temp
        cal[temp] = {"AUROC": gm.auroc(z, y, logits=True), "AP": gm.average_precision(z, y, logits=True),
                     "log loss": gm.log_loss(z, y, logits=True), "ECE": gm.ece(z, y, logits=True)}
        cal_rows.append([f"logit × {temp:g}", *cal[temp].values()])
    ctx.table("sharpening (× 3) or flattening (× 0.33) the model's logits",
              ["scores", "AUROC", "AP", "log loss", "ECE"], cal_rows)
    ctx.check(all(abs(cal[t][k] - cal[1.0][k]) < 1e-12 for t in (0.33, 3.0) for k in ("AUROC", "AP"))
              and all(cal[t]["log loss"] > cal[1.0]["log loss"] and cal[t]["ECE"] > cal[1.0]["ECE"]
                      for t in (0.33, 3.0)),
              "a monotone rescaling of the scores leaves AUROC and AP unchanged (1e-12) while log loss and ECE of the "
              "maximum-likelihood fit (logit × 1) get worse both ways",
              f"log loss {cal[0.33]['log loss']:.4f} / {cal[1.0]['log loss']:.4f} / {cal[3.0]['log loss']:.4f}, ECE "
              f"{cal[0.33]['ECE']:.4f} / {cal[1.0]['ECE']:.4f} / {cal[3.0]['ECE']:.4f}")

    # ------------------------------------------------------------ 4. multiclass
    k = len(PRIORS)
    xtr, ytr, xte, ym = multiclass_data(0, n)
    probs = LogisticRegression().fit(xtr, ytr).predict_proba(xte)
    pm = probs.argmax(1)
    avg_rows = []
    for avg in ("macro", "weighted", "micro"):
        avg_rows.append([avg, gm.precision(probs, ym, average=avg), gm.recall(probs, ym, average=avg),
                         gm.f1(probs, ym, average=avg)])
    per_class = [[c, int((ym == c).sum()), gm.precision(pm == c, ym == c), gm.recall(pm == c, ym == c),
                  gm.f1(pm == c, ym == c)] for c in range(k)]
    ctx.table(f"4-class test set (priors {PRIORS.tolist()}): one-vs-rest per class", ["class", "support", "precision",
                                                                                       "recall", "F1"], per_class)
    ctx.table("…and the averages", ["average", "precision", "recall", "F1"], avg_rows)
    acc_m = gm.accuracy(probs, ym)
    topk = {kk: gm.top_k_accuracy(probs, ym, k=kk) for kk in range(1, k + 1)}
    ctx.measure("multiclass accuracy / top-2 / top-3", f"{acc_m:.4f} / {topk[2]:.4f} / {topk[3]:.4f}")
    micro = avg_rows[2][1:]
    ctx.check(all(abs(v - acc_m) < 1e-12 for v in micro) and abs(topk[1] - acc_m) < 1e-12
              and abs(gm.balanced_accuracy(probs, ym) - avg_rows[0][2]) < 1e-12
              and all(topk[a] <= topk[a + 1] for a in range(1, k)) and topk[k] == 1.0,
              "identities: micro P = R = F1 = top-1 = accuracy; balanced accuracy = macro recall; "
              "top-k rises to 1 at k = K")
    ctx.check(avg_rows[0][3] < avg_rows[1][3], "macro-F1 < weighted-F1: the rare classes are the hard ones, and macro "
              "counts them fully", f"{avg_rows[0][3]:.4f} < {avg_rows[1][3]:.4f}")

    # ------------------------------------------------------------ 5. equality with scikit-learn
    c0 = first["cases"]
    pred_b = c0[model][0]
    onehot = label_binarize(ym, classes=list(range(k)))
    pairs = [  # (metric, case, goodfit, scikit-learn)
        ("accuracy", "binary", gm.accuracy(pred_b, y), skm.accuracy_score(y, pred_b)),
        ("balanced accuracy", "binary", gm.balanced_accuracy(pred_b, y), skm.balanced_accuracy_score(y, pred_b)),
        ("MCC", "binary", gm.mcc(pred_b, y), skm.matthews_corrcoef(y, pred_b)),
        ("Cohen κ", "binary", gm.cohen_kappa(pred_b, y), skm.cohen_kappa_score(y, pred_b)),
        ("AUROC", "binary", gm.auroc(p, y, logits=False), skm.roc_auc_score(y, p)),
        ("AP", "binary", gm.average_precision(p, y, logits=False), skm.average_precision_score(y, p)),
        ("log loss", "binary", gm.log_loss(p, y, logits=False), skm.log_loss(y, p)),
        ("ECE (15 bins)", "binary", gm.ece(p, y, logits=False), ece_reference(y, p)),
        ("F1", "constant", gm.f1(c0[const][0], y), skm.f1_score(y, c0[const][0])),
        ("precision (0/0)", "constant", gm.precision(c0[const][0], y), skm.precision_score(y, c0[const][0],
                                                                                           zero_division=0.0)),
        ("MCC", "constant", gm.mcc(c0[const][0], y), skm.matthews_corrcoef(y, c0[const][0])),
        ("AP", "constant", gm.average_precision(c0[const][1], y, logits=False),
         skm.average_precision_score(y, c0[const][1])),
        ("AUROC", "constant", gm.auroc(c0[const][1], y, logits=False), skm.roc_auc_score(y, c0[const][1])),
    ]
    prf = (("precision", gm.precision, skm.precision_score), ("recall", gm.recall, skm.recall_score),
           ("F1", gm.f1, skm.f1_score))
    for avg in ("binary", "macro", "micro", "weighted"):
        for name, ours, ref in prf:
            pairs.append((f"{name} ({avg})", "binary", ours(pred_b, y, average=avg), ref(y, pred_b, average=avg)))
    for avg in ("macro", "micro", "weighted"):
        for name, ours, ref in prf:
            pairs.append((f"{name} ({avg})", "4-class", ours(probs, ym, average=avg), ref(ym, pm, average=avg)))
    pairs += [
        ("accuracy", "4-class", acc_m, skm.accuracy_score(ym, pm)),
        ("balanced accuracy", "4-class", gm.balanced_accuracy(probs, ym), skm.balanced_accuracy_score(ym, pm)),
        ("MCC", "4-class", gm.mcc(probs, ym), skm.matthews_corrcoef(ym, pm)),
        *[(f"Cohen κ ({w or 'unweighted'})", "4-class", gm.cohen_kappa(probs, ym, weights=w),
           skm.cohen_kappa_score(ym, pm, weights=w)) for w in (None, "linear", "quadratic")],
        *[(f"top-{kk} accuracy", "4-class", topk[kk], skm.top_k_accuracy_score(ym, probs, k=kk, labels=list(range(k))))
          for kk in (2, 3)],
        ("AUROC (ovr, macro)", "4-class", gm.auroc(probs, ym, logits=False),
         skm.roc_auc_score(ym, probs, multi_class="ovr", average="macro")),
        ("AP (ovr, macro)", "4-class", gm.average_precision(probs, ym, logits=False),
         skm.average_precision_score(onehot, probs, average="macro")),
        ("log loss", "4-class", gm.log_loss(probs, ym, logits=False), skm.log_loss(ym, probs, labels=list(range(k)))),
        ("ECE (top-label, 15 bins)", "4-class", gm.ece(probs, ym, logits=False),
         ece_reference((pm == ym).astype(np.int64), probs.max(1))),
    ]
    diffs = [abs(float(a) - float(b)) for _, _, a, b in pairs]
    ctx.table("goodfit.metrics vs scikit-learn on the lab's data (ECE: from sklearn's calibration_curve)",
              ["metric", "data", "goodfit", "scikit-learn", "|diff|"],
              [[m, d, float(a), float(b), f"{e:.1e}"] for (m, d, a, b), e in zip(pairs, diffs)])
    cm_b, cm_m = gm.confusion_matrix(pred_b, y), gm.confusion_matrix(probs, ym)
    ctx.log(f"binary confusion matrix (rows truth, columns prediction): {cm_b.tolist()}")
    ctx.log(f"4-class confusion matrix: {cm_m.tolist()}")
    same_cm = np.array_equal(cm_b, skm.confusion_matrix(y, pred_b)) and \
        np.array_equal(cm_m, skm.confusion_matrix(ym, pm, labels=list(range(k))))
    ctx.measure("max |goodfit − scikit-learn| over the table", max(diffs))
    ctx.check(max(diffs) <= EXACT and same_cm, f"all {len(pairs)} values equal scikit-learn's (|diff| ≤ {EXACT:g}) and "
              "both confusion matrices are identical", f"max |diff| {max(diffs):.1e}")

    # ------------------------------------------------------------ figure
    fig, axes = plt.subplots(2, 2, figsize=(12, 9.5))
    ax = axes[0, 0]
    shown_keys = ["accuracy", "balanced acc.", "F1", "MCC", "AP"]
    width = 0.2
    for i, c in enumerate(names):
        ax.bar(np.arange(len(shown_keys)) + (i - 1.5) * width, [mean[c][kk] for kk in shown_keys], width, label=c)
    ax.axhline(pi_mean, color="grey", ls=":", lw=0.8)
    ax.set_xticks(np.arange(len(shown_keys)), shown_keys)
    ax.set_title(f"π = {pi_mean:.3f}: accuracy ≈ 0.95 even for 'always negative'")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    for key, style in (("precision", "-"), ("recall", "-"), ("F1", "--"), ("MCC", "--"), ("accuracy", ":")):
        ax.plot(thresholds, sweep[key], style, label=key)
    ax.axvline(thresholds[best], color="grey", lw=0.8, label=f"best F1 at t = {thresholds[best]:.2f}")
    ax.set_xlabel("threshold t (predict positive when p̂ ≥ t)")
    ax.set_title("threshold moving: recall falls, precision rises")
    ax.legend(fontsize=8)
    ax = axes[1, 0]
    prec_c, rec_c, _ = skm.precision_recall_curve(y, p)
    ax.plot(rec_c, prec_c, color="tab:blue", lw=1, label=f"model, AP = {gm.average_precision(p, y, logits=False):.3f}")
    ax.axhline(first["pi"], color="grey", ls=":", label=f"chance: AP = π = {first['pi']:.3f}")
    for t, i in at.items():
        ax.plot(sweep["recall"][i], sweep["precision"][i], "o", color="tab:red", ms=5)
        ax.annotate(f"t={t:g}", (sweep["recall"][i], sweep["precision"][i]), fontsize=8, xytext=(4, 4),
                    textcoords="offset points")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_ylim(0, 1.05)
    ax.set_title("PR curve with thresholds marked")
    ax.legend(fontsize=8, loc="lower left")
    ax = axes[1, 1]
    norm = cm_m / cm_m.sum(1, keepdims=True)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{cm_m[i, j]}\n{norm[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.6 else "black")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"4-class confusion matrix (row-normalized); macro-F1 {avg_rows[0][3]:.3f}, "
                 f"weighted {avg_rows[1][3]:.3f}", fontsize=9)
    ctx.figure(fig, "classification_metrics")


LAB = Lab(id="3.1", title="Classification metrics",
          question="分类任务评估指标（Accuracy、Precision 等） — Classification metrics: accuracy, balanced accuracy, "
                   "precision/recall/F1 (binary, macro, micro, weighted), confusion matrix, ROC-AUC, PR-AUC/AP, top-k, "
                   "MCC, Cohen's κ, log loss, ECE.",
          answer=ANSWER, run=run, uses="metrics (goodfit.metrics)")
