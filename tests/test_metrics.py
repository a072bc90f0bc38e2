"""Metrics against scikit-learn on seeded random cases, streamed and one-shot."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as sk
from sklearn.exceptions import UndefinedMetricWarning

from goodfit import metrics as gm
from goodfit.errors import UserError
from metric_helpers import batches, streamed

TOL = 1e-6
CASES = 250
LOW_PRECISION = (torch.float16, torch.bfloat16)


def as_float64(t: torch.Tensor) -> np.ndarray:
    """The exact values of a (possibly half-precision) tensor as a float64 array."""
    return t.to(torch.float64).numpy()


# ---------------------------------------------------------------- multiclass

def classification_case(seed: int):
    """A random multiclass case; the scenario cycles through the corner cases."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 8)) if seed % 5 else int(rng.integers(30, 60))  # both sides of the K <= 32 path
    n = 1 if seed % 25 == 0 else int(rng.integers(2, 80))
    scenario = seed % 5
    y_classes = np.arange(k)
    if scenario == 1:  # a class absent from the targets
        y_classes = np.delete(y_classes, rng.integers(k))
    y = rng.choice(y_classes, size=n)
    dtype = [torch.float32, torch.float16, torch.bfloat16][seed % 3]
    logits = torch.from_numpy(rng.normal(size=(n, k))).to(dtype)
    if scenario == 2:  # a class absent from the predictions
        logits[:, int(rng.integers(k))] = -100
    if scenario == 3:  # constant predictions
        logits[:, int(rng.integers(k))] = 100
    if scenario == 4:  # well-fit: predictions mostly right
        logits[torch.arange(n), torch.from_numpy(y)] += 2
    return rng, k, logits, torch.from_numpy(y)


@pytest.mark.parametrize("seed", range(CASES))
def test_classification_matches_sklearn(seed):
    rng, k, logits, y = classification_case(seed)
    p = as_float64(logits).argmax(1)
    expected = {"accuracy": sk.accuracy_score(y.numpy(), p),
                "macro_f1": sk.f1_score(y.numpy(), p, average="macro")}
    got = streamed(gm.ClassificationMetrics(k, ["accuracy", "macro_f1"]), logits, y, rng)
    assert got.keys() == expected.keys()
    for name in expected:
        assert abs(got[name] - expected[name]) <= TOL, name
    assert abs(gm.accuracy(logits, y) - expected["accuracy"]) <= TOL
    assert abs(gm.accuracy(torch.from_numpy(p), y) - expected["accuracy"]) <= TOL
    assert abs(gm.macro_f1(logits, y) - expected["macro_f1"]) <= TOL
    assert abs(gm.macro_f1(p, y.numpy(), num_classes=k) - expected["macro_f1"]) <= TOL


def test_macro_f1_corner_cases_match_sklearn():
    cases = [([0, 0, 1], [0, 0, 0]),   # class 1 never predicted: F1 0, averaged in
             ([0, 0, 0], [0, 0, 0]),   # one class, perfect
             ([0, 0, 0], [1, 1, 1]),   # predictions disjoint from targets
             ([2, 2, 2], [0, 0, 0]),   # labels 1 absent from both: not averaged
             ([1], [1]), ([1], [0])]   # single samples
    for y, p in cases:
        assert abs(gm.macro_f1(p, y) - sk.f1_score(y, p, average="macro")) <= TOL, (y, p)
        assert abs(gm.accuracy(p, y) - sk.accuracy_score(y, p)) <= TOL, (y, p)


def test_labels_outside_the_class_range_raise():
    acc = gm.ClassificationMetrics(3, ["accuracy"])
    acc.update(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"outside the class range \[0, 3\)"):
        acc.compute()


def test_classification_shape_errors():
    acc = gm.ClassificationMetrics(3, ["accuracy"])
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        acc.update(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="4 samples but target has 5"):
        acc.update(torch.zeros(4, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        acc.update(torch.zeros(4, 3), torch.zeros(4))


# ---------------------------------------------------------------- binary

def binary_case(seed: int):
    """A random binary case with both classes, tied scores in many cases, and varied target dtypes."""
    rng = np.random.default_rng(10_000 + seed)
    n = 2 if seed % 25 == 0 else int(rng.integers(2, 100))
    y = rng.integers(0, 2, size=n)
    y[rng.choice(n, size=2, replace=False)] = [0, 1]  # AUROC needs both classes
    scores = rng.normal(size=n) + (y if seed % 2 else 0)
    if seed % 4 == 1:
        scores = scores.round(1)  # many ties
    dtype = [torch.float32, torch.float16, torch.bfloat16, torch.float64][seed % 4]
    logits = torch.from_numpy(scores).to(dtype)
    if seed % 5 == 3:
        logits = torch.full_like(logits, 0.5)  # constant predictions: everything tied
    target = torch.from_numpy(y)
    target = [target.float(), target.long(), target.bool().float(), target.reshape(-1, 1).double()][seed % 4]
    if seed % 3 == 0:
        logits = logits.reshape(-1, 1)
    return rng, logits, target, y


@pytest.mark.parametrize("seed", range(CASES))
def test_binary_matches_sklearn(seed):
    rng, logits, target, y = binary_case(seed)
    s = as_float64(logits).reshape(-1)
    p = (s > 0).astype(int)
    expected = {"accuracy": sk.accuracy_score(y, p),
                "macro_f1": sk.f1_score(y, p, average="macro"),
                "auroc": sk.roc_auc_score(y, s)}
    got = streamed(gm.BinaryMetrics(["accuracy", "macro_f1", "auroc"]), logits, target, rng)
    assert got.keys() == expected.keys()
    for name in expected:
        assert abs(got[name] - expected[name]) <= TOL, name
    assert abs(gm.auroc(logits, target) - expected["auroc"]) <= TOL
    assert abs(gm.auroc(torch.sigmoid(logits.double()), y) - expected["auroc"]) <= TOL  # rank-invariant


def test_auroc_single_class_is_a_user_error():
    # sklearn 1.9 warns and returns NaN here; a NaN would silently poison early stopping on val_auroc.
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(sk.roc_auc_score([1, 1, 1], [0.1, 0.2, 0.3]))
    with pytest.raises(UserError, match="one class only") as info:
        gm.auroc([0.1, 0.2, 0.3], [1, 1, 1])
    assert info.value.hint


def test_binary_targets_other_than_zero_one_raise():
    acc = gm.BinaryMetrics(["accuracy"])
    acc.update(torch.zeros(3), torch.tensor([0.0, 1.0, 0.5]))
    with pytest.raises(ValueError, match="neither 0 nor 1"):
        acc.compute()


# ---------------------------------------------------------------- regression

def regression_case(seed: int):
    """A random regression case: 1-3 outputs, low precision, constant and perfect columns, scaling."""
    rng = np.random.default_rng(20_000 + seed)
    d = int(rng.integers(1, 4))
    n = 1 if seed % 25 == 0 else int(rng.integers(2, 80))
    y = rng.normal(size=(n, d)) * rng.uniform(0.1, 10, size=d) + rng.normal(size=d)
    pred = y + rng.normal(size=(n, d)) * rng.uniform(0.01, 3)
    if seed % 5 == 1:
        y[:, 0] = rng.integers(-8, 8) / 4  # a constant target column (dyadic: sklearn's mean is exact)
    if seed % 5 == 2:
        pred[:, -1] = y[:, -1]  # a perfectly predicted column
    if seed % 5 == 3:
        pred[:] = pred.mean(0)  # constant predictions
    dtype = [torch.float32, torch.float16, torch.bfloat16, torch.float64][seed % 4]
    y_t, p_t = torch.from_numpy(y).to(dtype), torch.from_numpy(pred).to(dtype)
    if d == 1 and seed % 2:
        y_t, p_t = y_t.reshape(-1), p_t.reshape(-1)
    return rng, d, p_t, y_t


def sklearn_regression(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """sklearn's three regression metrics (r2 is NaN below two samples, with a warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {"mse": sk.mean_squared_error(y, p), "mae": sk.mean_absolute_error(y, p), "r2": sk.r2_score(y, p)}


def assert_close(got: dict[str, float], expected: dict[str, float]) -> None:
    """Equal within TOL, NaN matching NaN."""
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        if np.isnan(value):
            assert np.isnan(got[name]), name
        else:
            assert abs(got[name] - value) <= TOL, (name, got[name], value)


@pytest.mark.parametrize("seed", range(CASES))
def test_regression_matches_sklearn(seed):
    rng, d, pred, y = regression_case(seed)
    expected = sklearn_regression(as_float64(y), as_float64(pred))
    got = streamed(gm.RegressionMetrics(d, ["mse", "mae", "r2"]), pred, y, rng)
    assert_close(got, expected)
    assert_close({name: getattr(gm, name)(pred, y) for name in expected}, expected)


@pytest.mark.parametrize("seed", range(40))
def test_regression_reports_in_original_units(seed):
    rng, d, pred, y = regression_case(seed)
    # Dyadic scale and integer shift keep a constant column exactly constant for sklearn's mean too.
    scale = torch.from_numpy(rng.integers(2, 200, size=d) / 4)
    shift = torch.from_numpy(rng.integers(-400, 400, size=d).astype(np.float64))
    unscale = lambda t: as_float64(t).reshape(-1, d) * scale.numpy() + shift.numpy()  # noqa: E731
    expected = sklearn_regression(unscale(y), unscale(pred))
    acc = gm.make_metrics("regression", ["mse", "mae", "r2"], num_outputs=d,
                          target_scale=scale, target_shift=shift)
    assert_close(streamed(acc, pred, y, rng), expected)


def test_r2_of_a_large_mean_target_is_stable_when_streamed():
    # |mean| / std = 1e8: sum(y²) - sum(y)²/n would lose every digit of the variance.
    rng = np.random.default_rng(7)
    y = 1e8 + rng.normal(size=(1000, 2))
    pred = y + 0.3 * rng.normal(size=(1000, 2))
    expected = sklearn_regression(y, pred)
    got = streamed(gm.RegressionMetrics(2, ["mse", "mae", "r2"]), torch.from_numpy(pred), torch.from_numpy(y), rng)
    assert_close(got, expected)


def test_r2_constant_target_convention():
    # sklearn's force_finite: perfect -> 1.0, otherwise 0.0 for a constant target.
    assert gm.r2([2.5, 2.5, 2.5], [2.5, 2.5, 2.5]) == sk.r2_score([2.5] * 3, [2.5] * 3) == 1.0
    assert gm.r2([2.0, 3.0, 2.5], [2.5, 2.5, 2.5]) == sk.r2_score([2.5] * 3, [2.0, 3.0, 2.5]) == 0.0
    # Constancy is detected exactly: the float mean of three 0.1s leaves a ~1e-33 variance,
    # from which sklearn computes a huge negative score.
    y, p = np.full(3, 0.1), np.full(3, 0.2)
    assert sk.r2_score(y, p) < -1e20
    assert gm.r2(p, y) == 0.0
    assert gm.r2(torch.from_numpy(np.full((7, 2), 0.3)), torch.from_numpy(np.full((7, 2), 0.7))) == 0.0


def test_regression_shape_errors():
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        gm.RegressionMetrics(2, ["mse"]).update(torch.zeros(4, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="4 samples but target has 5"):
        gm.RegressionMetrics(1, ["mse"]).update(torch.zeros(4), torch.zeros(5))


# ---------------------------------------------------------------- accumulators and registry

@pytest.mark.parametrize("task,kwargs", [("classification", {"num_classes": 3}), ("binary", {}),
                                         ("regression", {"num_outputs": 2})])
def test_update_never_reads_values_on_the_host(task, kwargs):
    # On the meta device any .item(), .tolist() or data-dependent shape raises: update must not sync.
    acc = gm.make_metrics(task, gm.DEFAULT_METRICS[task], **kwargs, target_scale=None)
    shape = {"classification": (8, 3), "binary": (8,), "regression": (8, 2)}[task]
    target = torch.zeros(shape[:1] if task == "classification" else shape, device="meta",
                         dtype=torch.long if task == "classification" else torch.float32)
    for _ in range(2):
        acc.update(torch.randn(shape, device="meta"), target)


def test_reset_and_empty_compute():
    acc = gm.ClassificationMetrics(2, ["accuracy", "macro_f1"])
    assert all(np.isnan(v) for v in acc.compute().values())
    acc.update(torch.tensor([0, 0]), torch.tensor([1, 1]))
    assert acc.compute()["accuracy"] == 0.0
    acc.reset()
    acc.update(torch.tensor([1, 1]), torch.tensor([1, 1]))
    assert acc.compute() == {"accuracy": 1.0, "macro_f1": 1.0}


def test_compute_returns_only_requested_metrics_in_order():
    acc = gm.make_metrics("binary", ["auroc", "accuracy"])
    acc.update(torch.tensor([-1.0, 2.0, 0.5]), torch.tensor([0, 1, 0]))
    assert list(acc.compute()) == ["auroc", "accuracy"]


def test_registry_is_consistent():
    # The defaults are the first, cheap names of each task (the longer lists are opt-in).
    for task, names in gm.TASK_METRICS.items():
        assert gm.DEFAULT_METRICS[task] == list(names[:len(gm.DEFAULT_METRICS[task])])
        assert all(name in gm.HIGHER_IS_BETTER for name in names)
    assert gm.DEFAULT_METRICS.keys() == gm.TASK_METRICS.keys()
    assert gm.HIGHER_IS_BETTER["loss"] is False and gm.HIGHER_IS_BETTER["mse"] is False


def test_unknown_metric_is_a_user_error_with_a_hint():
    with pytest.raises(UserError, match="available: accuracy, macro_f1") as info:
        gm.make_metrics("classification", ["acuracy"], num_classes=3)
    assert "did you mean 'accuracy'" in info.value.hint
    with pytest.raises(UserError, match="not available for task 'regression'"):
        gm.make_metrics("regression", ["accuracy"])
    with pytest.raises(UserError) as info:
        gm.make_metrics("regresion", ["mse"])
    assert "'regression'" in info.value.hint


def test_make_metrics_picks_the_accumulator():
    assert isinstance(gm.make_metrics("classification", ["accuracy"], num_classes=4), gm.ClassificationMetrics)
    assert isinstance(gm.make_metrics("binary", ["auroc"]), gm.BinaryMetrics)
    assert isinstance(gm.make_metrics("regression", ["r2"], num_outputs=3), gm.RegressionMetrics)
