"""Classification metrics (issue 3) against scikit-learn on seeded random cases, one-shot and streamed.

Every case compares each metric with scikit-learn (or, where scikit-learn has no definition, with
an independent NumPy computation of the documented convention) to 1e-6, cycling through the corner
cases: a class absent from the targets or the predictions, constant predictions, tied scores, a
single sample, float16 / bfloat16 inputs, and inputs given as tensors, NumPy arrays or lists.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as sk
from sklearn.calibration import calibration_curve

from goodfit import metrics as gm
from goodfit.errors import UserError
from metric_helpers import batches, streamed

TOL = 1e-6
CASES = 200  # per metric: every case checks every metric
ZERO_DIVISION = (0.0, 1.0, float("nan"))


def close(got: float, expected: float, what=None) -> None:
    if isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(got), (what, got)
    elif math.isinf(expected):
        assert got == expected, (what, got, expected)
    else:
        assert abs(got - expected) <= TOL, (what, got, expected)


def quiet(fn, *args, **kwargs):
    """Call scikit-learn with its undefined-metric warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def as_input(x: torch.Tensor, seed: int):
    """The same values as a tensor, a NumPy array or (for small float64/int data) a list."""
    form = seed % 3
    if form == 1:
        return x.to(torch.float64).numpy() if x.is_floating_point() else x.numpy()
    if form == 2 and x.dtype in (torch.float64, torch.int64):
        return x.tolist()
    return x


def reference_bins(confidence: np.ndarray, outcome: np.ndarray, n_bins: int):
    """Equal-width bins (lo, hi] (the first also holds 0), by explicit masks: counts, mean conf, mean outcome."""
    edges = np.linspace(0, 1, n_bins + 1)
    count, conf, acc = np.zeros(n_bins), np.full(n_bins, np.nan), np.full(n_bins, np.nan)
    for b in range(n_bins):
        mask = (confidence > edges[b]) & (confidence <= edges[b + 1])
        if b == 0:
            mask |= confidence <= edges[0]
        count[b] = mask.sum()
        if count[b]:
            conf[b], acc[b] = confidence[mask].mean(), outcome[mask].mean()
    ece = sum(c / len(confidence) * abs(a - f) for c, a, f in zip(count, acc, conf) if c)
    return count, conf, acc, ece


def check_bins(bins: gm.ReliabilityBins, confidence: np.ndarray, outcome: np.ndarray, n_bins: int) -> float:
    """Reliability bins equal to the explicit reference and to scikit-learn's calibration_curve."""
    count, conf, acc, ece = reference_bins(confidence, outcome, n_bins)
    assert np.array_equal(bins.count, count)
    np.testing.assert_allclose(bins.confidence, conf, atol=TOL, equal_nan=True)
    np.testing.assert_allclose(bins.accuracy, acc, atol=TOL, equal_nan=True)
    assert np.array_equal(bins.edges, np.linspace(0, 1, n_bins + 1))
    prob_true, prob_pred = calibration_curve(outcome.astype(int), confidence, n_bins=n_bins)
    np.testing.assert_allclose(bins.accuracy[count > 0], prob_true, atol=TOL)
    np.testing.assert_allclose(bins.confidence[count > 0], prob_pred, atol=TOL)
    return ece


# ---------------------------------------------------------------- multiclass

def multiclass_case(seed: int):
    """A random multiclass case; the scenario cycles through the corner cases."""
    rng = np.random.default_rng(30_000 + seed)
    k = int(rng.integers(2, 9)) if seed % 7 else int(rng.integers(30, 45))  # both sides of the K <= 32 path
    n = 1 if seed % 25 == 0 else int(rng.integers(2, 90))
    scenario = seed % 6
    classes = np.arange(k)
    if scenario == 1:  # a class absent from the targets
        classes = np.delete(classes, rng.integers(k))
    y = rng.choice(classes, size=n)
    logits = rng.normal(size=(n, k)) * rng.uniform(0.3, 4)
    if scenario == 2:  # a class absent from the predictions
        logits[:, int(rng.integers(k))] = -30
    if scenario == 3:  # constant predictions
        logits[:, int(rng.integers(k))] = 30
    if scenario == 4:  # well-fit
        logits[np.arange(n), y] += 2.5
    if scenario == 5 or seed % 4 == 1:  # tied scores, within rows and across samples
        logits = logits.round(0)
        logits[:, -1] = logits[:, 0]
    dtype = [torch.float32, torch.float16, torch.bfloat16, torch.float64][seed % 4]
    return rng, k, torch.from_numpy(logits).to(dtype), torch.from_numpy(y)


def ovr_reference(name: str, y: np.ndarray, p: np.ndarray) -> float:
    """One-vs-rest macro over the classes present in the targets: sklearn's multilabel form on those columns."""
    fn = sk.roc_auc_score if name == "auroc" else sk.average_precision_score
    onehot = (y[:, None] == np.arange(p.shape[1])).astype(int)
    keep = onehot.any(0) & ((1 - onehot).any(0) if name == "auroc" else True)
    if keep.sum() == 1:  # one column: sklearn reads it as binary
        return fn(onehot[:, keep].ravel(), p[:, keep].ravel())
    return fn(onehot[:, keep], p[:, keep], average="macro")


MULTICLASS_NAMES = list(gm.TASK_METRICS["classification"])


@pytest.mark.parametrize("seed", range(CASES))
def test_multiclass_matches_sklearn(seed):
    rng, k, logits, y_t = multiclass_case(seed)
    y = y_t.numpy()
    s = logits.to(torch.float64)
    p_t = torch.softmax(s, 1)  # what the accumulator computes from the logits, bit for bit
    s, p = s.numpy(), p_t.numpy()
    pred = s.argmax(1)
    labels = np.arange(k)
    zd = ZERO_DIVISION[seed % 3]
    weights = [None, "linear", "quadratic"][seed % 3]
    top = int(rng.integers(1, k + 1))

    # label metrics, functional form (predictions as scores or as labels)
    preds = as_input(logits, seed) if seed % 2 else as_input(torch.from_numpy(pred), seed)
    target = as_input(y_t, seed)
    kw = {"num_classes": k}
    close(gm.accuracy(preds, target), sk.accuracy_score(y, pred), "accuracy")
    close(gm.balanced_accuracy(preds, target, **kw), quiet(sk.balanced_accuracy_score, y, pred), "balanced")
    close(gm.balanced_accuracy(preds, target, adjusted=True, **kw),
          quiet(sk.balanced_accuracy_score, y, pred, adjusted=True), "balanced adjusted")
    for average in ("macro", "micro", "weighted"):
        expected = quiet(sk.precision_recall_fscore_support, y, pred, average=average, zero_division=zd)
        for fn, value in zip((gm.precision, gm.recall, gm.f1), expected):
            close(fn(preds, target, average=average, zero_division=zd, **kw), value, (fn.__name__, average, zd))
    assert np.array_equal(gm.confusion_matrix(preds, target, **kw), sk.confusion_matrix(y, pred, labels=labels))
    close(gm.mcc(preds, target, **kw), sk.matthews_corrcoef(y, pred), "mcc")
    close(gm.cohen_kappa(preds, target, weights=weights, **kw),
          quiet(sk.cohen_kappa_score, y, pred, labels=labels, weights=weights), ("kappa", weights))

    # score metrics, functional form (logits, or the probabilities themselves)
    scores = as_input(logits, seed) if seed % 2 else as_input(p_t, seed)
    if k > 2:
        expected_top = sk.top_k_accuracy_score(y, s, k=top, labels=labels)
    else:  # sklearn reads two columns with binary targets as an error; its multiclass rule, by hand
        expected_top = np.mean((np.argsort(s, axis=1, kind="mergesort")[:, ::-1][:, :top] == y[:, None]).any(1))
    close(gm.top_k_accuracy(as_input(logits, seed), target, k=top), expected_top, ("top", top))
    close(gm.log_loss(scores, target), sk.log_loss(y, p, labels=labels), "log_loss")
    n_bins = int(rng.integers(1, 20))
    bins = gm.reliability_bins(scores, target, n_bins)
    ece = check_bins(bins, p.max(1), (p.argmax(1) == y).astype(float), n_bins)
    close(gm.ece(scores, target, n_bins=n_bins), ece, "ece")
    present = len(np.unique(y))
    if present == k > 2:  # sklearn's own multiclass forms (it refuses an absent class, or two columns)
        expected_ap, expected_auc = sk.average_precision_score(y, p), sk.roc_auc_score(y, p, multi_class="ovr")
    else:  # the documented convention, class by class with sklearn
        expected_ap = ovr_reference("average_precision", y, p)
        expected_auc = ovr_reference("auroc", y, p) if present >= 2 else None
    close(gm.average_precision(scores, target), expected_ap, "ap")
    if present >= 2:
        close(gm.auroc(scores, target), expected_auc, "auroc")
    else:
        with pytest.raises(UserError, match="one class only"):
            gm.auroc(scores, target)

    # the streaming accumulator, every recipe name at once, over uneven batches
    names = [name for name in MULTICLASS_NAMES if not (name.startswith("top") and int(name[3]) > k)]
    if present < 2:
        names.remove("auroc")
    acc = gm.make_metrics("classification", names, num_classes=k)
    got = streamed(acc, logits, y_t, rng)
    assert list(got) == names
    one_shot = {  # the functional forms, each checked against sklearn above or in other cases
        "accuracy": lambda: gm.accuracy(logits, y_t),
        "balanced_accuracy": lambda: gm.balanced_accuracy(logits, y_t),
        "mcc": lambda: gm.mcc(logits, y_t), "cohen_kappa": lambda: gm.cohen_kappa(logits, y_t),
        "log_loss": lambda: gm.log_loss(logits, y_t, logits=True),
        "ece": lambda: gm.ece(logits, y_t, logits=True),
        "auroc": lambda: gm.auroc(logits, y_t),
        "average_precision": lambda: gm.average_precision(logits, y_t),
        "top3_accuracy": lambda: gm.top_k_accuracy(logits, y_t, k=3),
        "top5_accuracy": lambda: gm.top_k_accuracy(logits, y_t, k=5),
    }
    for name in names:
        if name in one_shot:
            expected = one_shot[name]()
        else:
            average, metric = name.split("_")
            expected = getattr(gm, metric)(logits, y_t, average=average)
        close(got[name], expected, name)
    rb = acc.reliability()
    assert np.array_equal(rb.count, reference_bins(p.max(1), (p.argmax(1) == y).astype(float), 15)[0])
    assert np.array_equal(acc.confusion_matrix(), sk.confusion_matrix(y, pred, labels=labels))


def test_top5_needs_five_classes():
    with pytest.raises(UserError, match="top5_accuracy needs at least 5 classes; this task has 4") as info:
        gm.make_metrics("classification", ["accuracy", "top5_accuracy"], num_classes=4)
    assert info.value.hint
    gm.make_metrics("classification", ["top5_accuracy"], num_classes=5)  # trivially 1.0, but defined
    with pytest.raises(UserError, match="top3_accuracy needs at least 3 classes"):
        gm.top_k_accuracy([[0.2, 0.8]], [1], k=3)
    assert gm.top_k_accuracy([[0.2, 0.8]], [0], k=2) == 1.0


def test_top_k_ties_follow_sklearn():
    # All scores tied: sklearn's reversed stable sort ranks the highest class index first.
    scores = np.zeros((4, 4))
    y = np.array([0, 1, 2, 3])
    for k in (1, 2, 3):
        assert gm.top_k_accuracy(scores, y, k=k) == sk.top_k_accuracy_score(y, scores, k=k) == k / 4


def test_score_metrics_need_scores_not_labels():
    acc = gm.ClassificationMetrics(3, ["accuracy", "log_loss"])
    with pytest.raises(ValueError, match=r"metrics log_loss need scores of shape \(N, 3\)"):
        acc.update(torch.tensor([0, 1]), torch.tensor([0, 1]))


def test_probabilities_or_logits_are_told_apart():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3]])
    y = np.array([0, 2, 2])
    expected = sk.log_loss(y, p, labels=[0, 1, 2])
    assert abs(gm.log_loss(p, y) - expected) <= TOL  # rows in [0, 1] summing to 1: probabilities
    assert abs(gm.log_loss(np.log(p), y) - expected) <= TOL  # log-probabilities are logits
    assert abs(gm.log_loss(p, y, logits=True) - expected) > 0.1  # told otherwise: softmax(p)
    pb = np.array([0.9, 0.2, 0.6])
    yb = np.array([1, 0, 0])
    assert abs(gm.log_loss(pb, yb) - sk.log_loss(yb, pb)) <= TOL
    logit = np.log(pb / (1 - pb))
    assert abs(gm.log_loss(logit, yb) - sk.log_loss(yb, pb)) <= TOL
    assert abs(gm.log_loss(pb, yb, logits=False) - sk.log_loss(yb, pb)) <= TOL


def test_log_loss_clips_like_sklearn():
    y = np.array([0, 1, 1])
    p = np.array([[1.0, 0.0], [1.0, 0.0], [0.5, 0.5]])  # two confident mistakes: clipped at eps
    assert abs(gm.log_loss(p, y) - sk.log_loss(y, p)) <= TOL
    assert abs(gm.log_loss([0.0, 1.0, 1.0], [1, 0, 1]) - sk.log_loss([1, 0, 1], [0.0, 1.0, 1.0])) <= TOL


# ---------------------------------------------------------------- binary

def binary_case(seed: int):
    """A random binary case: ties, constant scores, one-class targets, a single sample, varied dtypes."""
    rng = np.random.default_rng(40_000 + seed)
    n = 1 if seed % 25 == 0 else int(rng.integers(2, 100))
    y = rng.integers(0, 2, size=n) if seed % 11 else np.full(n, seed % 2)  # sometimes one class only
    scores = rng.normal(size=n) * rng.uniform(0.5, 3) + (y if seed % 2 else 0)
    if seed % 4 == 1:
        scores = scores.round(1)  # many ties
    dtype = [torch.float32, torch.float16, torch.bfloat16, torch.float64][seed % 4]
    logits = torch.from_numpy(scores).to(dtype)
    if seed % 5 == 3:
        logits = torch.full_like(logits, 0.5)  # constant predictions: everything tied
    target = torch.from_numpy(y)
    target = [target.float(), target.long(), target.bool(), target.reshape(-1, 1).double()][seed % 4]
    return rng, logits, target, y


BINARY_NAMES = list(gm.TASK_METRICS["binary"])


@pytest.mark.parametrize("seed", range(CASES))
def test_binary_matches_sklearn(seed):
    rng, logits, target, y = binary_case(seed)
    s = logits.to(torch.float64)
    p_t = torch.sigmoid(s)
    s, p = s.numpy(), p_t.numpy()
    pred = (s > 0).astype(int)
    zd = ZERO_DIVISION[seed % 3]
    one_class = len(np.unique(y)) < 2

    preds = as_input(torch.from_numpy(pred), seed)
    tgt = as_input(target.reshape(-1).long(), seed)
    for average in ("binary", "macro"):
        expected = quiet(sk.precision_recall_fscore_support, y, pred, average=average, zero_division=zd)
        for fn, value in zip((gm.precision, gm.recall, gm.f1), expected):
            close(fn(preds, tgt, average=average, zero_division=zd), value, (fn.__name__, average, zd))
    close(gm.mcc(preds, tgt), sk.matthews_corrcoef(y, pred), "mcc")
    close(gm.cohen_kappa(preds, tgt), quiet(sk.cohen_kappa_score, y, pred), "kappa")
    close(gm.balanced_accuracy(preds, tgt), quiet(sk.balanced_accuracy_score, y, pred), "balanced")

    scores = as_input(logits, seed)
    close(gm.average_precision(scores, target), quiet(sk.average_precision_score, y, s), "ap")
    close(gm.average_precision(p_t, target), quiet(sk.average_precision_score, y, p), "ap of probabilities")
    close(gm.log_loss(scores, target, logits=True), sk.log_loss(y, p, labels=[0, 1]), "log_loss")
    close(gm.log_loss(p_t, target), sk.log_loss(y, p, labels=[0, 1]), "log_loss of probabilities")
    n_bins = int(rng.integers(1, 20))
    ece = check_bins(gm.reliability_bins(scores, target, n_bins, logits=True), p, y.astype(float), n_bins)
    close(gm.ece(scores, target, n_bins=n_bins, logits=True), ece, "ece")
    if one_class:
        with pytest.raises(UserError, match="one class only"):
            gm.auroc(scores, target)
    else:
        close(gm.auroc(scores, target), sk.roc_auc_score(y, s), "auroc")

    names = [name for name in BINARY_NAMES if not (one_class and name == "auroc")]
    got = streamed(gm.make_metrics("binary", names), logits, target, rng)
    assert list(got) == names
    one_shot = {  # the functional forms, each checked against sklearn above or in other cases
        "accuracy": lambda: gm.accuracy(pred, y), "macro_f1": lambda: gm.macro_f1(pred, y),
        "balanced_accuracy": lambda: gm.balanced_accuracy(pred, y),
        "precision": lambda: gm.precision(pred, y), "recall": lambda: gm.recall(pred, y),
        "f1": lambda: gm.f1(pred, y), "mcc": lambda: gm.mcc(pred, y), "cohen_kappa": lambda: gm.cohen_kappa(pred, y),
        "average_precision": lambda: gm.average_precision(logits, target),
        "log_loss": lambda: gm.log_loss(logits, target, logits=True),
        "ece": lambda: gm.ece(logits, target, logits=True), "auroc": lambda: gm.auroc(logits, target),
    }
    for name in names:
        close(got[name], one_shot[name](), name)


def test_binary_average_rejects_multiclass_labels():
    with pytest.raises(ValueError, match="average='binary' needs labels in"):
        gm.precision([0, 1, 2], [0, 1, 2])
    with pytest.raises(ValueError, match="average must be one of"):
        gm.f1([0, 1], [0, 1], average="samples")


def test_zero_division_conventions_match_sklearn():
    cases = [([0, 0], [0, 0]),        # class 1 absent from both: binary P, R, F1 all 0/0
             ([1, 1], [0, 0]),        # never predicted positive: precision 0/0
             ([0, 0], [1, 1]),        # no positive target: recall 0/0
             ([0, 0, 1], [0, 0, 0]),  # macro: class 1 never predicted
             ([0, 2, 2], [1, 1, 2])]  # multiclass, labels disjoint in part
    for y, p in cases:
        for zd in ZERO_DIVISION:
            for average in ("binary", "macro", "micro", "weighted"):
                if average == "binary" and max(y + p) > 1:
                    continue
                for fn, ref in ((gm.precision, sk.precision_score), (gm.recall, sk.recall_score),
                                (gm.f1, sk.f1_score)):
                    close(fn(p, y, average=average, zero_division=zd),
                          quiet(ref, y, p, average=average, zero_division=zd), (y, p, zd, average, fn.__name__))


def test_undefined_scores_follow_sklearn():
    # MCC of a constant marginal: 0.0; kappa when both sides share one label: NaN (sklearn 1.9).
    assert gm.mcc([1, 1], [1, 1]) == sk.matthews_corrcoef([1, 1], [1, 1]) == 0.0
    assert math.isnan(gm.cohen_kappa([1, 1], [1, 1])) and math.isnan(quiet(sk.cohen_kappa_score, [1, 1], [1, 1]))
    # Average precision with no positive target: 0.0, as sklearn.
    assert gm.average_precision([0.1, 0.7], [0, 0]) == quiet(sk.average_precision_score, [0, 0], [0.1, 0.7]) == 0.0
    # No samples at all: NaN everywhere.
    for fn in (gm.accuracy, gm.balanced_accuracy, gm.f1, gm.mcc, gm.cohen_kappa):
        assert math.isnan(fn(np.zeros(0, dtype=int), np.zeros(0, dtype=int)))
    assert all(math.isnan(v) for v in gm.make_metrics("binary", BINARY_NAMES).compute().values())


def test_integral_float_labels_are_accepted_and_fractions_refused():
    assert gm.accuracy(np.array([0.0, 1.0, 1.0]), np.array([0.0, 1.0, 0.0])) == 2 / 3
    with pytest.raises(ValueError, match="threshold scores first"):
        gm.precision([0.2, 0.9], [0, 1])


# ---------------------------------------------------------------- accumulator contract

@pytest.mark.parametrize("task,kwargs", [("classification", {"num_classes": 6}), ("binary", {})])
def test_update_with_every_name_never_reads_values_on_the_host(task, kwargs):
    # On the meta device any .item(), .tolist() or data-dependent shape raises: update must not sync.
    acc = gm.make_metrics(task, gm.TASK_METRICS[task], **kwargs)
    shape = (8, 6) if task == "classification" else (8,)
    target = torch.zeros(8, device="meta", dtype=torch.long)
    for _ in range(2):
        acc.update(torch.randn(shape, device="meta"), target)


def test_default_names_keep_their_cheap_state():
    # The defaults keep no scores for the epoch (multiclass) and no extra sums.
    acc = gm.make_metrics("classification", gm.DEFAULT_METRICS["classification"], num_classes=3)
    acc.update(torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1]))
    assert acc._sums is None and not acc._scores
