"""load_data: splits, train-only statistics, determinism, perturbation knobs, balancing."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.utils.class_weight import compute_class_weight

from goodfit.data import load_data
from goodfit.data.allocate import allocate
from goodfit.data.split import split_indices
from goodfit.errors import UserError
from goodfit.recipe import Data


def data(**kw) -> Data:
    return Data.model_validate(kw)


def labels_of(y: torch.Tensor) -> np.ndarray:
    return y.numpy().astype(np.int64)


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


# ------------------------------------------------------------------ splitting

@settings(max_examples=200, deadline=None)
@given(counts=st.lists(st.integers(0, 60), min_size=1, max_size=12),
       weights=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=4), seed=st.integers(0, 2**32))
def test_allocation_is_within_one_of_exact_shares(counts, weights, seed):
    if sum(weights) == 0:
        weights = [1.0] * len(weights)
    f = np.array(weights) / sum(weights)
    counts = np.array(counts)
    table = allocate(counts, f, np.random.default_rng(seed))
    exact = counts[:, None] * f[None, :]
    assert (table >= 0).all()
    assert (table.sum(1) == counts).all()
    assert np.abs(table - exact).max() < 1 + 1e-9
    assert np.abs(table.sum(0) - counts.sum() * f).max() < 1 + 1e-9


@pytest.mark.parametrize("source,val,test", [("digits", 0.15, 0.15), ("iris", 0.2, 0.1), ("wine", 0.33, 0.27)])
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_stratified_split_counts_within_one_sample_per_class(source, val, test, seed):
    from sklearn import datasets

    y_all = getattr(datasets, f"load_{source}")().target
    per_class = np.bincount(y_all)
    d = load_data(data(source=source, split={"val": val, "test": test}), "classification", seed)
    for y, f in [(d.y_train, 1 - val - test), (d.y_val, val), (d.y_test, test)]:
        counts = np.bincount(labels_of(y), minlength=len(per_class))
        assert np.abs(counts - per_class * f).max() < 1 + 1e-9, (counts, per_class * f)
    assert len(d.y_train) + len(d.y_val) + len(d.y_test) == len(y_all)


def test_split_parts_are_disjoint_and_cover_every_row():
    y = np.random.default_rng(0).integers(0, 4, 301)
    parts = split_indices(len(y), [0.6, 0.25, 0.15], np.random.default_rng(3), y)
    joined = np.concatenate(parts)
    assert len(joined) == len(y) and set(joined.tolist()) == set(range(len(y)))


def test_unstratified_split_of_regression_targets_has_exact_sizes():
    d = load_data(data(source="diabetes", split={"val": 0.2, "test": 0.1, "stratify": False}), "regression", 0)
    sizes = np.array([len(d.y_train), len(d.y_val), len(d.y_test)])
    assert sizes.sum() == 442 and np.abs(sizes - 442 * np.array([0.7, 0.2, 0.1])).max() < 1


def test_too_few_samples_for_a_stratified_split_names_the_class(tmp_path):
    y = np.array([0] * 20 + [1] * 20 + [2])
    path = write_npz(tmp_path / "few.npz", x=np.random.default_rng(0).normal(size=(41, 3)), y=y)
    with pytest.raises(UserError) as e:
        load_data(data(source=path), "classification", 0)
    assert "'2' (1 sample)" in e.value.message and "stratify=false" in e.value.hint
    d = load_data(data(source=path, split={"stratify": False}), "classification", 0)
    assert len(d.y_train) + len(d.y_val) + len(d.y_test) == 41


# ------------------------------------------------------------------ determinism

def _tensors(d):
    return [d.x_train, d.y_train, d.x_val, d.y_val, d.x_test, d.y_test]


def test_same_seed_gives_identical_tensors_and_another_seed_another_split():
    cfg = data(source="wine", perturb={"label_noise": 0.1, "subset": 100})
    a, b, c = (load_data(cfg, "classification", s) for s in (5, 5, 6))
    assert all(torch.equal(u, v) for u, v in zip(_tensors(a), _tensors(b)))
    assert a.info == b.info
    json.dumps(a.info)  # info goes into run files: plain JSON types only
    assert not torch.equal(a.x_val, c.x_val)


def test_a_perturbation_does_not_move_the_split():
    clean = load_data(data(source="digits", normalize="none"), "classification", 3)
    noisy = load_data(data(source="digits", normalize="none", perturb={"label_noise": 0.3}), "classification", 3)
    assert torch.equal(clean.x_train, noisy.x_train) and torch.equal(clean.x_test, noisy.x_test)


# ------------------------------------------------------------------ normalization

def _train_rows(path, task="classification"):
    """Row ids of the train split, read from feature 0 (= the row id) with normalization off."""
    d = load_data(data(source=path, normalize="none"), task, 0)
    return d.x_train.reshape(len(d.x_train), -1)[:, 0].numpy().astype(int)


def test_normalization_statistics_come_from_train_rows_only(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(200, 5)) * np.array([1, 1, 10, 0.1, 5])
    x[:, 0] = np.arange(200)
    y = rng.integers(0, 3, 200)
    path = write_npz(tmp_path / "a.npz", x=x, y=y)
    train = _train_rows(path)
    others = np.setdiff1d(np.arange(200), train)
    x2 = x.copy()
    x2[others, 1:] = rng.normal(1000, 300, size=(len(others), 4))  # val/test changed arbitrarily
    path2 = write_npz(tmp_path / "b.npz", x=x2, y=y)

    a = load_data(data(source=path), "classification", 0)
    b = load_data(data(source=path2), "classification", 0)
    assert torch.equal(a.x_train, b.x_train)
    assert a.info["normalize"] == b.info["normalize"]
    mean, std = x[train].mean(0), x[train].std(0)
    np.testing.assert_allclose(a.x_train.numpy(), (x[train] - mean) / std, rtol=1e-5, atol=1e-5)
    # val rows are normalized with the train statistics too (column 0, the row id, locates them)
    ids = np.rint(b.x_val.numpy()[:, 0] * std[0] + mean[0]).astype(int)
    assert set(ids.tolist()) <= set(others.tolist())
    np.testing.assert_allclose(b.x_val.numpy(), (x2[ids] - mean) / std, rtol=1e-4, atol=1e-4)


def test_minmax_maps_train_to_unit_range_and_constant_features_stay_finite(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.uniform(-5, 9, size=(120, 4))
    x[:, 3] = 7.0  # constant: zero range must not divide by zero
    path = write_npz(tmp_path / "m.npz", x=x, y=rng.integers(0, 2, 120))
    d = load_data(data(source=path, normalize="minmax"), "classification", 0)
    t = d.x_train.numpy()
    np.testing.assert_allclose(t[:, :3].min(0), 0, atol=1e-6)
    np.testing.assert_allclose(t[:, :3].max(0), 1, atol=1e-6)
    assert np.isfinite(d.x_val.numpy()).all() and (t[:, 3] == 0).all()


def test_images_and_sequences_are_normalized_per_channel(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(150, 2, 7))
    x[:, 1] = x[:, 1] * 10 + 50  # the second channel has its own scale
    x[:, 0, 0] = np.arange(150)
    path = write_npz(tmp_path / "c.npz", x=x, y=rng.integers(0, 3, 150))
    train = _train_rows(path)
    d = load_data(data(source=path), "classification", 0)
    mean = x[train].mean(axis=(0, 2), keepdims=True)
    std = x[train].std(axis=(0, 2), keepdims=True)
    np.testing.assert_allclose(d.x_train.numpy(), (x[train] - mean) / std, rtol=1e-4, atol=1e-4)
    assert d.info["normalize"]["per"] == "channel" and d.info["normalize"]["count"] == 2


# ------------------------------------------------------------------ regression targets

def test_regression_targets_are_standardized_with_train_statistics(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(90, 3))
    x[:, 0] = np.arange(90)
    y = np.stack([3 * x[:, 0] + 7, -2 * x[:, 0]], axis=1)
    path = write_npz(tmp_path / "r.npz", x=x, y=y)
    d = load_data(data(source=path, normalize="none", split={"stratify": False}), "regression", 0)
    assert d.num_outputs == 2 and d.y_train.shape == (len(d.x_train), 2) and d.num_classes is None
    np.testing.assert_allclose(d.y_train.mean(0).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(d.y_train.std(0, unbiased=False).numpy(), 1, atol=1e-5)
    ids = d.x_val[:, 0].numpy()
    restored = d.y_val * d.target_scale + d.target_shift
    np.testing.assert_allclose(restored.numpy(), np.stack([3 * ids + 7, -2 * ids], 1), rtol=1e-5, atol=1e-3)
    small = load_data(data(source=path, split={"stratify": False}, perturb={"subset": 20}), "regression", 0)
    assert len(small.y_train) == 20  # and the target statistics come from those 20 rows
    np.testing.assert_allclose(small.y_train.mean(0).numpy(), 0, atol=1e-5)


# ------------------------------------------------------------------ perturbations

def test_subset_keeps_n_stratified_and_leaves_val_test_alone():
    base = data(source="digits", normalize="none")
    clean = load_data(base, "classification", 0)
    d = load_data(data(source="digits", normalize="none", perturb={"subset": 200}), "classification", 0)
    assert len(d.y_train) == 200
    full = np.bincount(labels_of(clean.y_train), minlength=10)
    kept = np.bincount(labels_of(d.y_train), minlength=10)
    assert np.abs(kept - full * 200 / full.sum()).max() < 1 + 1e-9
    assert torch.equal(d.x_val, clean.x_val) and torch.equal(d.y_test, clean.y_test)
    # the kept rows are training rows: each appears in the clean train split
    train_rows = {tuple(r) for r in clean.x_train.reshape(len(clean.x_train), -1).tolist()}
    assert all(tuple(r) in train_rows for r in d.x_train.reshape(200, -1).tolist())


def test_subset_larger_than_train_is_a_user_error():
    with pytest.raises(UserError, match="subset=5000 is larger than the training split"):
        load_data(data(source="iris", perturb={"subset": 5000}), "classification", 0)


@pytest.mark.parametrize("ratio", [0.1, 0.5])
def test_imbalance_thins_classes_geometrically(ratio):
    clean = load_data(data(source="digits", normalize="none"), "classification", 0)
    d = load_data(data(source="digits", normalize="none", perturb={"imbalance": ratio}), "classification", 0)
    before = np.bincount(labels_of(clean.y_train), minlength=10)
    after = np.bincount(labels_of(d.y_train), minlength=10)
    expected = [min(int(before[i]), max(1, math.floor(before.max() * ratio ** (i / 9) + 0.5))) for i in range(10)]
    assert after.tolist() == expected
    assert after[9] / before.max() == pytest.approx(ratio, abs=0.01)
    assert torch.equal(d.y_val, clean.y_val)


@pytest.mark.parametrize("task,source,p", [("classification", "digits", 0.2), ("binary", "breast_cancer", 0.15),
                                           ("classification", "iris", 0.5)])
def test_label_noise_flips_exactly_round_pn_labels_each_to_another_class(task, source, p):
    clean = load_data(data(source=source, normalize="none"), task, 4)
    d = load_data(data(source=source, normalize="none", perturb={"label_noise": p}), task, 4)
    assert torch.equal(clean.x_train, d.x_train) and torch.equal(clean.y_val, d.y_val)
    changed = np.flatnonzero(labels_of(clean.y_train) != labels_of(d.y_train))
    n = len(d.y_train)
    assert len(changed) == math.floor(p * n + 0.5) == d.info["perturb"]["label_noise"]["flipped"]
    assert changed.tolist() == d.info["perturb"]["label_noise"]["rows"]
    if task == "classification" and source == "digits":
        # every "other" class is reachable: the shifts (new - old) mod K cover 1..K-1
        shift = (labels_of(d.y_train)[changed] - labels_of(clean.y_train)[changed]) % 10
        assert set(shift.tolist()) == set(range(1, 10))


def test_label_noise_needs_classes():
    with pytest.raises(UserError, match="label_noise needs class labels"):
        load_data(data(source="diabetes", perturb={"label_noise": 0.1}), "regression", 0)


def test_feature_scale_multiplies_feature_j_by_s_power_j_over_d_minus_1():
    s = 100.0
    clean = load_data(data(source="breast_cancer"), "binary", 0)
    d = load_data(data(source="breast_cancer", perturb={"feature_scale": s}), "binary", 0)
    measured = d.x_train.numpy().std(0)  # standardized features have std 1 before scaling
    np.testing.assert_allclose(measured, s ** (np.arange(30) / 29), rtol=1e-4)
    # val and test carry the same scales (it models badly scaled raw inputs, not a shift)
    np.testing.assert_allclose(d.x_test.numpy(), clean.x_test.numpy() * s ** (np.arange(30) / 29), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d.x_val.numpy(), clean.x_val.numpy() * s ** (np.arange(30) / 29), rtol=1e-5, atol=1e-5)


def test_feature_scale_flattens_image_features():
    d = load_data(data(source="digits", normalize="none", perturb={"feature_scale": 10.0}), "classification", 0)
    clean = load_data(data(source="digits", normalize="none"), "classification", 0)
    factors = (10.0 ** (np.arange(64) / 63)).reshape(1, 8, 8)
    np.testing.assert_allclose(d.x_train.numpy(), clean.x_train.numpy() * factors, rtol=1e-5)


# ------------------------------------------------------------------ balancing

def test_class_weights_match_sklearn_balanced_weights_scaled_to_mean_one():
    d = load_data(data(source="digits", balance="class_weights", perturb={"imbalance": 0.2}), "classification", 0)
    y = labels_of(d.y_train)
    ref = compute_class_weight("balanced", classes=np.arange(10), y=y)
    np.testing.assert_allclose(d.class_weights.numpy(), ref / ref.mean(), rtol=1e-5)
    assert d.class_weights.mean().item() == pytest.approx(1.0)


def test_binary_class_weights_give_pos_weight_n_neg_over_n_pos():
    d = load_data(data(source="breast_cancer", balance="class_weights"), "binary", 0)
    y = d.y_train.numpy()
    w0, w1 = d.class_weights.tolist()
    assert w1 / w0 == pytest.approx((y == 0).sum() / (y == 1).sum())
    assert set(np.unique(y).tolist()) == {0.0, 1.0} and d.y_train.dtype == torch.float32 and d.num_outputs == 1


def test_sampler_balance_gives_inverse_frequency_row_weights():
    d = load_data(data(source="wine", balance="sampler"), "classification", 0)
    y = labels_of(d.y_train)
    w = d.sample_weights.numpy()
    per_class = np.array([w[y == c].sum() for c in range(3)])
    np.testing.assert_allclose(per_class, per_class[0], rtol=1e-5)  # each class has the same total weight
