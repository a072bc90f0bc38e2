"""Pre-flight data quality checks: input scale, class balance, leakage across splits, label noise.

Pure functions of the tensors the model sees (after `data.normalize`), each returning a dataclass of
evidence and a verdict against a threshold measured on goodfit's built-in data (numbers below).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

# A feature's magnitude is its RMS √(mean² + std²): the scale the first layer multiplies, offset included.
# Built-in data, standardized: every feature's RMS ≤ 1.42 (digits, normalized per channel); minmax: ≤ 0.81.
# The cut-offs sit where training measurably suffers (digits-mlp, best val loss, 3 seeds): largest RMS 12.9
# (raw digits, 0…16) or 12.7 (feature_scale=10) cost nothing, 20–25 (feature_scale=20) +19 %, 114
# (feature_scale=100) +50 % and SGD diverges; raw wine (805) and breast cancer (1050) lose 31 and 8 test
# accuracy points. Raw diabetes (median RMS 0.048) trains as well as standardized; 10× smaller (0.015) loses 12 %.
LARGE_INPUT = 15.0      # unnormalized when some feature's RMS exceeds this ...
SMALL_INPUT = 0.02      # ... or the median feature RMS is below this
# Built-in data: ratio ≤ 1.68 (breast cancer). digits-mlp macro-F1: ratio 3 −2 points, ratio 10 −5 points.
IMBALANCE_RATIO = 3.0   # largest / smallest class count (binary: minority ≤ 25 %)
# Built-in splits: no exact duplicate, and every val/test row's nearest train row is ≥ 0.32 × the median.
NEAR_FRACTION = 0.1     # near-duplicate: closer than this × the median nearest-neighbour distance within train
LEAK_FRACTION = 0.01    # a finding when more than this fraction of val or test rows has a copy in an earlier split
# Clean built-in labels: estimate ≤ 0.005; 10 % / 20 % flipped: 0.10 / 0.19–0.22. MNIST-1D defeats the fast
# models (out-of-fold accuracy 0.5): flagged rows' suggested class averages 0.27 probability vs ≥ 0.74 on digits.
NOISE_RATE = 0.05       # a finding when confident learning estimates at least this fraction of wrong labels ...
CONFIDENT = 0.5         # ... and the model gives the labels it suggests this probability on average (else inconclusive)
KNN_NEIGHBOURS = 15


def _flat(x) -> Tensor:
    x = torch.as_tensor(x)
    return x.reshape(len(x), math.prod(x.shape[1:])).to(torch.float64)  # not -1: a split may have 0 rows


def _median(v: Tensor) -> float:
    return float(torch.quantile(v, 0.5)) if v.numel() else math.nan


def _json(d: dict) -> dict:
    """Evidence for diagnosis.json (strict JSON): NaN (nothing to measure) and inf (a missing class) become None."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in d.items()}


# ------------------------------------------------------------------ input scale

@dataclass
class InputScale:
    """Per-feature statistics of the training inputs (features flattened) and whether they look unnormalized."""

    mean: Tensor            # (d,)
    std: Tensor             # (d,) population std
    rms: Tensor             # (d,) √(mean² + std²)
    constant: int           # features with std 0 (left out of every summary below)
    typical_std: float      # median std
    max_mean: float         # max |mean| in units of typical_std
    spread: float           # largest / smallest std
    off_fraction: float     # fraction of features with |mean| > 3 std or std outside [0.1, 10]
    overall_rms: float      # √(mean of x²) over all entries
    max_rms: float
    typical_rms: float      # median RMS
    worst: Tensor           # up to 5 feature indices farthest from unit RMS (|log RMS| largest), worst first
    unnormalized: bool      # max_rms > LARGE_INPUT or typical_rms < SMALL_INPUT

    def evidence(self) -> dict:
        return _json({"max_feature_rms": self.max_rms, "median_feature_rms": self.typical_rms,
                      "overall_rms": self.overall_rms, "max_abs_mean_in_std": self.max_mean,
                      "std_spread": self.spread, "off_fraction": self.off_fraction,
                      "constant_features": self.constant, "worst_features": self.worst.tolist()})


def input_scale(x_train, *, top: int = 5) -> InputScale:
    """Mean, std and RMS of each flattened feature; unnormalized if some feature's RMS > LARGE_INPUT or the
    median RMS < SMALL_INPUT."""
    x = _flat(x_train)
    mean, std = x.mean(0), x.std(0, correction=0)
    rms = (mean**2 + std**2).sqrt()
    live = (std > 1e-6 * mean.abs()) & (std > 0)  # a constant column's std is 0 up to the rounding of its mean
    s, r = std[live], rms[live]
    off = ((mean.abs() > 3 * std) | (std < 0.1) | (std > 10))[live]
    ranked = torch.argsort(r.log().abs(), descending=True, stable=True)[:top]
    max_rms, typical_rms = (float(r.max()) if r.numel() else 0.0), _median(r)
    typical_std = _median(s)
    return InputScale(
        mean=mean, std=std, rms=rms, constant=int((~live).sum()), typical_std=typical_std,
        max_mean=float(mean[live].abs().max() / typical_std) if s.numel() else math.nan,
        spread=float(s.max() / s.min()) if s.numel() else math.nan,
        off_fraction=float(off.double().mean()) if s.numel() else 0.0,
        overall_rms=float(x.pow(2).mean().sqrt()), max_rms=max_rms, typical_rms=typical_rms,
        worst=torch.nonzero(live).reshape(-1)[ranked],
        unnormalized=bool(max_rms > LARGE_INPUT or typical_rms < SMALL_INPUT),
    )


# ------------------------------------------------------------------ class balance

@dataclass
class ClassBalance:
    counts: Tensor          # (K,) samples per class
    ratio: float            # largest / smallest count; inf when a class has none
    entropy: float          # H(counts) / log K: 1 when balanced, 0 when one class only
    minority: list[int]     # classes with count × threshold ≤ the largest count, rarest first
    missing: list[int]      # classes with no sample
    imbalanced: bool        # ratio ≥ threshold

    def evidence(self) -> dict:
        return _json({"imbalance_ratio": self.ratio, "normalized_entropy": self.entropy,
                      "class_counts": self.counts.tolist(), "minority_classes": self.minority,
                      "missing_classes": self.missing})


def class_balance(y, num_classes: int, *, threshold: float = IMBALANCE_RATIO) -> ClassBalance:
    """Class counts, max/min ratio and normalized entropy of integer (or 0/1) labels."""
    counts = torch.bincount(torch.as_tensor(y).reshape(-1).long(), minlength=num_classes)
    if len(counts) > num_classes:
        raise ValueError(f"labels reach {len(counts) - 1}, but num_classes is {num_classes}")
    hi, lo = int(counts.max()), int(counts.min())
    p = counts[counts > 0].double() / counts.sum()
    entropy = float(-(p * p.log()).sum() / math.log(num_classes)) if num_classes > 1 else 1.0
    ratio = math.inf if lo == 0 else hi / lo
    order = torch.argsort(counts, stable=True).tolist()
    return ClassBalance(counts=counts, ratio=ratio, entropy=entropy,
                        minority=[c for c in order if counts[c] * threshold <= hi],
                        missing=[c for c in order if counts[c] == 0], imbalanced=ratio >= threshold)


# ------------------------------------------------------------------ leakage across splits

PAIRS = (("val", "train"), ("test", "train"), ("test", "val"))


@dataclass
class Leakage:
    """Rows of a later split (val, test) repeated, exactly or nearly, in an earlier one (train, val)."""

    exact: dict[str, Tensor]          # "val-train", "test-train", "test-val": (m, 2) row pairs [row in first, row in second]
    near: dict[str, Tensor]           # same keys: (m, 2) [row, its nearest non-identical row] when closer than the cut
    near_distance: dict[str, Tensor]  # (m,) their distances in units of median_nn
    leaked: dict[str, float]          # "val", "test": fraction of rows with an exact or near copy in an earlier split
    leaked_rows: dict[str, Tensor]    # those rows
    train_duplicates: int             # train rows equal to another train row (not leakage; they weigh double)
    median_nn: float                  # median distance from a train row to its nearest other train row
    near_fraction: float              # the near cut, in units of median_nn (nan: near-duplicates not searched)
    leaking: bool                     # some leaked fraction > threshold

    def evidence(self) -> dict:
        return _json({**{f"{k}_fraction": v for k, v in self.leaked.items()},
                      **{f"exact_{k}": len(v) for k, v in self.exact.items()},
                      **{f"near_{k}": len(v) for k, v in self.near.items()},
                      "train_duplicates": self.train_duplicates, "median_nn_distance": self.median_nn})


def _row_ids(parts: list[Tensor]) -> list[np.ndarray]:
    """One integer per distinct float32 row, shared across parts (rows hashed by their bytes)."""
    flat = [np.ascontiguousarray(p.to(torch.float32).numpy()) + np.float32(0.0) for p in parts]  # + 0: -0.0 → 0.0
    d = flat[0].shape[1]
    every = np.concatenate(flat).view(np.dtype((np.void, 4 * d))).reshape(-1)
    ids = np.unique(every, return_inverse=True)[1].reshape(-1)
    return np.split(ids, np.cumsum([len(p) for p in parts])[:-1])


def _matches(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(m, 2) all pairs (i, j) with a[i] == b[j]."""
    order = np.argsort(b, kind="stable")
    lo, hi = np.searchsorted(b[order], a, "left"), np.searchsorted(b[order], a, "right")
    n = hi - lo
    i = np.repeat(np.arange(len(a)), n)
    j = order[np.repeat(lo, n) + np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)]
    return np.stack([i, j], 1)


def _nearest(q: Tensor, q_ids: np.ndarray, ref: Tensor, ref_ids: np.ndarray) -> tuple[Tensor, Tensor]:
    """Distance to and index of each query row's nearest reference row that is not identical to it."""
    dist = torch.full((len(q),), math.inf, dtype=torch.float64)
    idx = torch.zeros(len(q), dtype=torch.int64)
    if len(ref) == 0:
        return dist, idx
    qi, ri = torch.from_numpy(q_ids), torch.from_numpy(ref_ids)
    step = max(1, 2**22 // len(ref))  # ≤ 32 MiB of distances at a time
    for s in range(0, len(q), step):
        d = torch.cdist(q[s:s + step], ref)
        d[qi[s:s + step, None] == ri[None, :]] = math.inf  # exact twins (and the row itself) are counted by hash
        dist[s:s + step], idx[s:s + step] = d.min(1)
    return dist, idx


def split_leakage(x_train, x_val, x_test, *, near: bool = True, near_fraction: float = NEAR_FRACTION,
                  threshold: float = LEAK_FRACTION) -> Leakage:
    """Exact duplicates (same float32 bytes) and near-duplicates (nearest-neighbour distance below
    near_fraction × the median nearest-neighbour distance within train) across splits."""
    x = {"train": _flat(x_train), "val": _flat(x_val), "test": _flat(x_test)}
    ids = dict(zip(x, _row_ids(list(x.values()))))
    exact = {f"{a}-{b}": torch.from_numpy(_matches(ids[a], ids[b])) for a, b in PAIRS}
    near_pairs = {k: torch.zeros((0, 2), dtype=torch.int64) for k in exact}
    near_dist = {k: torch.zeros(0, dtype=torch.float64) for k in exact}
    median_nn, cut = math.nan, math.nan
    if near and len(x["train"]) > 1:
        probe = np.unique(np.linspace(0, len(x["train"]) - 1, min(len(x["train"]), 2000)).astype(np.int64))
        d, _ = _nearest(x["train"][probe], ids["train"][probe], x["train"], ids["train"])
        median_nn = _median(d[torch.isfinite(d)])
        cut = near_fraction
        for a, b in PAIRS:
            d, j = _nearest(x[a], ids[a], x[b], ids[b])
            rel = d / median_nn
            rows = torch.nonzero(rel < cut).reshape(-1)
            near_pairs[f"{a}-{b}"] = torch.stack([rows, j[rows]], 1)
            near_dist[f"{a}-{b}"] = rel[rows]
    leaked_rows, leaked = {}, {}
    for part in ("val", "test"):
        hits = [t[:, 0] for found in (exact, near_pairs) for k, t in found.items() if k.startswith(part)]
        leaked_rows[part] = torch.unique(torch.cat(hits)) if hits else torch.zeros(0, dtype=torch.int64)
        leaked[part] = len(leaked_rows[part]) / len(x[part]) if len(x[part]) else 0.0
    train_dups = len(ids["train"]) - len(np.unique(ids["train"]))
    return Leakage(exact=exact, near=near_pairs, near_distance=near_dist, leaked=leaked, leaked_rows=leaked_rows,
                   train_duplicates=int(train_dups), median_nn=median_nn, near_fraction=cut,
                   leaking=any(v > threshold for v in leaked.values()))


# ------------------------------------------------------------------ label noise (confident learning)

@dataclass
class LabelIssues:
    """Confident learning (Northcutt, Jiang & Chuang 2021) on out-of-fold predicted probabilities."""

    indices: Tensor              # flagged rows, lowest self-confidence (most suspicious) first
    suggested: Tensor            # the class the model believes for each flagged row
    self_confidence: Tensor      # p(given label) of each flagged row
    noise_rate: float            # estimated fraction of wrong labels: 1 − trace of the calibrated joint Q
    flagged_fraction: float      # len(indices) / n
    oof_accuracy: float          # out-of-fold argmax agreement with the given labels
    suggested_confidence: float  # mean p(suggested class) over flagged rows; < CONFIDENT: the model is too weak to tell
    thresholds: Tensor           # (K,) t_j = mean p_j over rows labelled j
    confident_joint: Tensor      # (K, K) C[given, suggested] counts
    probs: Tensor                # (n, K) the probabilities used
    conclusive: bool             # suggested_confidence ≥ CONFIDENT (or nothing flagged)
    noisy: bool                  # conclusive and noise_rate ≥ NOISE_RATE

    def evidence(self) -> dict:
        return _json({"estimated_noise_rate": self.noise_rate, "flagged": len(self.indices),
                      "flagged_fraction": self.flagged_fraction, "oof_accuracy": self.oof_accuracy,
                      "suggested_confidence": self.suggested_confidence,
                      "most_suspicious": self.indices[:10].tolist()})


def confident_learning(probs, labels, num_classes: int) -> LabelIssues:
    """Per-class thresholds t_j = mean p_j over rows labelled j; row i counts in C[y_i, k*] with k* the most probable
    class among those with p_k ≥ t_k; off-diagonal rows are issues, ranked by self-confidence p_{y_i} (paper eqs. 1–3)."""
    p = torch.as_tensor(probs, dtype=torch.float64)
    y = torch.as_tensor(labels).reshape(-1).long()
    n, k = p.shape
    rows = torch.arange(n)
    counts = torch.bincount(y, minlength=num_classes).double()
    own = p[rows, y]
    sums = torch.zeros(k, dtype=torch.float64).index_add_(0, y, own)
    t = torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, math.inf))  # no rows: never confident
    above = p >= t
    best = torch.where(above, p, -math.inf).argmax(1)
    counted = above.any(1)
    joint = torch.zeros((k, k), dtype=torch.int64).index_put_(
        (y[counted], best[counted]), torch.ones(int(counted.sum()), dtype=torch.int64), accumulate=True)
    issue = torch.nonzero(counted & (best != y)).reshape(-1)
    issue = issue[torch.argsort(own[issue], stable=True)]
    # calibrate each row of C to the given-label count, then normalize to a joint distribution Q (eqs. 2–3)
    c = joint.double()
    calibrated = c / c.sum(1, keepdim=True).clamp(min=1) * counts[:, None]
    total = float(calibrated.sum())
    noise = 1 - float(calibrated.trace()) / total if total > 0 else math.nan
    conf = float(p[issue, best[issue]].mean()) if len(issue) else math.nan
    conclusive = not len(issue) or conf >= CONFIDENT
    return LabelIssues(
        indices=issue, suggested=best[issue], self_confidence=own[issue], noise_rate=noise,
        flagged_fraction=len(issue) / n if n else 0.0, oof_accuracy=float((p.argmax(1) == y).double().mean()),
        suggested_confidence=conf, thresholds=t, confident_joint=joint, probs=p,
        conclusive=conclusive, noisy=conclusive and noise >= NOISE_RATE,
    )


def _models(name: str, n_fit: int) -> list:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # C = 0.1: the stronger L2 resists fitting the wrong labels (digits with 20 % noise: precision 0.93 vs 0.80 at C = 1)
    logistic = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=500))
    knn = make_pipeline(StandardScaler(), KNeighborsClassifier(min(KNN_NEIGHBOURS, n_fit)))
    table = {"logistic": [logistic], "knn": [knn], "logistic+knn": [logistic, knn]}
    if name not in table:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(table)}")
    return table[name]


def out_of_fold_probs(x, y, num_classes: int, *, folds: int = 5, seed: int = 0, model: str = "logistic+knn") -> Tensor:
    """(n, K) class probabilities of each row from models fitted on the other folds (stratified k-fold)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    xs = _flat(x).numpy()
    ys = torch.as_tensor(y).reshape(-1).long().numpy()
    folds = min(folds, len(ys))
    if folds < 2:
        raise ValueError("out-of-fold probabilities need at least 2 rows")
    probs = np.zeros((len(ys), num_classes))
    # one BLAS thread: on small data, threads cost more than they give (a 5-fold fit went from 0.05 s to 16 s
    # with 2 OpenBLAS threads on a busy 2-core machine)
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        for fit_rows, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(xs, ys):
            members = _models(model, len(fit_rows))
            for m in members:
                m.fit(xs[fit_rows], ys[fit_rows])
                probs[np.ix_(held, m.classes_)] += m.predict_proba(xs[held]) / len(members)
    return torch.from_numpy(probs)


def label_issues(x, y, num_classes: int, *, folds: int = 5, seed: int = 0, model: str = "logistic+knn") -> LabelIssues:
    """Confident learning on out-of-fold probabilities of a fast model (default: mean of L2 logistic regression and 15-NN)."""
    return confident_learning(out_of_fold_probs(x, y, num_classes, folds=folds, seed=seed, model=model), y, num_classes)


def linear_baseline_mse(x, y, *, folds: int = 5, seed: int = 0) -> float:
    """Out-of-fold mean squared error of ridge regression (α chosen by leave-one-out among 13 values):
    the loss a linear model already reaches, i.e. about how much of the target a simple fit leaves as noise."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, cross_val_predict
    from threadpoolctl import threadpool_limits

    xs = _flat(x).double().numpy()
    ys = torch.as_tensor(y).double().reshape(len(xs), -1).numpy()
    folds = min(folds, len(ys))
    if folds < 2:
        raise ValueError("an out-of-fold baseline needs at least 2 rows")
    with threadpool_limits(1):
        pred = cross_val_predict(RidgeCV(alphas=np.logspace(-3, 3, 13)), xs, ys,
                                 cv=KFold(folds, shuffle=True, random_state=seed))
    return float(((pred.reshape(ys.shape) - ys) ** 2).mean())
