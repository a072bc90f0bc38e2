"""Regression metrics (issue 3: rmse, mape, explained_variance with mse, mae, r2) against scikit-learn."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as sk

from goodfit import metrics as gm
from metric_helpers import batches

TOL = 1e-6
CASES = 200
NAMES = list(gm.TASK_METRICS["regression"])


def sklearn_regression(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {"mse": sk.mean_squared_error(y, p), "mae": sk.mean_absolute_error(y, p), "r2": sk.r2_score(y, p),
                "rmse": sk.root_mean_squared_error(y, p), "mape": sk.mean_absolute_percentage_error(y, p),
                "explained_variance": sk.explained_variance_score(y, p)}


def assert_close(got: dict[str, float], expected: dict[str, float]) -> None:
    assert list(got) == list(expected)
    for name, value in expected.items():
        if math.isnan(value):
            assert math.isnan(got[name]), name
        else:
            assert abs(got[name] - value) <= TOL, (name, got[name], value)


def regression_case(seed: int):
    """1-3 outputs, low precision, constant / perfect / shifted columns, constant predictions, one sample."""
    rng = np.random.default_rng(50_000 + seed)
    d = int(rng.integers(1, 4))
    n = 1 if seed % 25 == 0 else int(rng.integers(2, 80))
    y = rng.normal(size=(n, d)) * rng.uniform(0.1, 10, size=d) + rng.normal(size=d)
    pred = y + rng.normal(size=(n, d)) * rng.uniform(0.01, 3)
    scenario = seed % 6
    if scenario == 1:
        y[:, 0] = rng.choice([-2.25, -0.5, 0.75, 3.0])  # a constant (dyadic, nonzero) target column
    if scenario == 2:
        pred[:, -1] = y[:, -1]  # a perfectly predicted column
    if scenario == 3:
        pred[:] = pred.mean(0)  # constant predictions
    if scenario == 4:  # a column predicted up to a constant shift: explained variance 1, r2 below
        y[:, 0] = rng.integers(1, 40, size=n) * rng.choice([-1, 1], size=n) / 4  # nonzero: mape stays O(1)
        pred[:, 0] = y[:, 0] + 0.5
    dtype = [torch.float32, torch.float16, torch.bfloat16, torch.float64][seed % 4]
    y_t, p_t = torch.from_numpy(y).to(dtype), torch.from_numpy(pred).to(dtype)
    if d == 1 and seed % 2:
        y_t, p_t = y_t.reshape(-1), p_t.reshape(-1)
    return rng, d, p_t, y_t


@pytest.mark.parametrize("seed", range(CASES))
def test_regression_matches_sklearn(seed):
    rng, d, pred, y = regression_case(seed)
    expected = sklearn_regression(y.to(torch.float64).numpy(), pred.to(torch.float64).numpy())
    acc = gm.make_metrics("regression", NAMES, num_outputs=d)
    for part in batches(pred.shape[0], rng):
        acc.update(pred[part], y[part])
    assert_close(acc.compute(), expected)
    as_input = [lambda t: t, lambda t: t.to(torch.float64).numpy(), lambda t: t.to(torch.float64).tolist()][seed % 3]
    assert_close({name: getattr(gm, name)(as_input(pred), as_input(y)) for name in NAMES}, expected)


def test_mape_of_zero_targets_divides_by_eps_like_sklearn():
    y = np.array([0.0, 1.0, -2.0, 0.0])
    p = np.array([0.5, 1.5, -2.0, 0.0])
    assert math.isclose(gm.mape(p, y), sk.mean_absolute_percentage_error(y, p), rel_tol=1e-12)
    assert gm.mape(p, y) > 1e14  # 0.5 / eps


def test_explained_variance_conventions_match_sklearn():
    # A constant shift: residual variance 0 -> 1.0 (r2 is below 1). A constant target not predicted: 0.0.
    y, p = np.array([1.0, 2.0, 4.0]), np.array([1.5, 2.5, 4.5])
    assert gm.explained_variance(p, y) == sk.explained_variance_score(y, p) == 1.0
    assert gm.r2(p, y) < 1
    y, p = np.full(4, 2.5), np.array([1.0, 2.0, 3.0, 4.0])
    assert gm.explained_variance(p, y) == sk.explained_variance_score(y, p) == 0.0
    assert gm.explained_variance([3.0], [1.0]) == sk.explained_variance_score([1.0], [3.0]) == 1.0
    # Constancy is detected exactly, as for r2: three 0.1s leave sklearn a ~1e-33 variance.
    y, p = np.full(3, 0.1), np.array([0.2, 0.3, 0.1])
    assert gm.explained_variance(p, y) == 0.0


def test_rmse_is_the_mean_of_column_rmses():
    y = np.array([[0.0, 0.0], [0.0, 0.0]])
    p = np.array([[1.0, 3.0], [1.0, 3.0]])
    assert gm.rmse(p, y) == sk.root_mean_squared_error(y, p) == 2.0  # not sqrt(mean mse) = sqrt(5)


def test_update_with_every_name_never_reads_values_on_the_host():
    acc = gm.make_metrics("regression", NAMES, num_outputs=2, target_scale=torch.tensor([2.0, 3.0]))
    for _ in range(2):
        acc.update(torch.randn(8, 2, device="meta"), torch.randn(8, 2, device="meta"))
