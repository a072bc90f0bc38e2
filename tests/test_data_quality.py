"""Pre-flight data checks (goodfit.data.quality): input scale, class balance, leakage across splits, label noise."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from goodfit.data import load_data
from goodfit.data import quality as q
from goodfit.recipe import builtin_recipes, load_recipe

RECIPES = sorted(builtin_recipes())


def splits(recipe: str, *overrides: str):
    r = load_recipe(recipe, list(overrides))
    return load_data(r.data, r.task, r.seed)


# ------------------------------------------------------------------ input scale

def test_input_scale_statistics_equal_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3, 4)) * rng.uniform(0.01, 50, size=(1, 3, 4)) + rng.normal(0, 20, size=(1, 3, 4))
    x[:, 0, 0] = 7.0  # a constant feature, left out of the summaries
    s = q.input_scale(torch.from_numpy(x))
    f = x.reshape(200, -1)
    mean, std = f.mean(0), f.std(0)
    live = np.arange(12) != 0
    rms = np.sqrt(mean**2 + std**2)
    np.testing.assert_allclose(s.mean.numpy(), mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(s.std.numpy(), std, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(s.rms.numpy(), rms, rtol=1e-10)
    assert s.constant == 1
    assert s.typical_std == pytest.approx(np.median(std[live]))
    assert s.max_mean == pytest.approx(np.abs(mean[live]).max() / np.median(std[live]))
    assert s.spread == pytest.approx(std[live].max() / std[live].min())
    off = (np.abs(mean) > 3 * std) | (std < 0.1) | (std > 10)
    assert s.off_fraction == pytest.approx(off[live].mean())
    assert s.overall_rms == pytest.approx(np.sqrt(np.mean(f**2)))
    assert s.max_rms == pytest.approx(rms[live].max()) and s.typical_rms == pytest.approx(np.median(rms[live]))
    expected_worst = np.flatnonzero(live)[np.argsort(-np.abs(np.log(rms[live])), kind="stable")[:5]]
    assert s.worst.tolist() == expected_worst.tolist()
    assert s.unnormalized == (rms[live].max() > q.LARGE_INPUT or np.median(rms[live]) < q.SMALL_INPUT)


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("normalize", ["standard", "minmax"])
def test_normalized_builtin_data_passes(recipe, normalize):
    s = q.input_scale(splits(recipe, f"data.normalize={normalize}").x_train)
    assert not s.unnormalized, s.evidence()
    assert s.max_rms < 1.5  # measured: ≤ 1.42 (digits, per-channel standardization), minmax ≤ 0.81


@pytest.mark.parametrize("recipe,overrides,largest", [
    ("wine-mlp", ["data.normalize=none"], "proline"),                 # 278…1680
    ("breast-cancer-mlp", ["data.normalize=none"], "worst area"),     # 185…4254
    ("digits-mlp", ["data.perturb.feature_scale=100"], None),
    ("mnist1d-cnn", ["data.perturb.feature_scale=100"], None),
])
def test_raw_or_rescaled_features_are_unnormalized_and_the_worst_named(recipe, overrides, largest):
    d = splits(recipe, *overrides)
    s = q.input_scale(d.x_train)
    assert s.unnormalized and s.max_rms > 5 * q.LARGE_INPUT, s.evidence()  # measured ≥ 100
    worst = int(s.worst[0])
    if largest is not None:
        assert d.feature_names[worst] == largest
    else:  # feature j is multiplied by 100^(j/(d-1)): the worst features are the last ones
        assert worst >= len(s.mean) - 4 and bool((s.worst >= len(s.mean) - 8).all())


def test_tiny_inputs_are_unnormalized_too():
    # scikit-learn's diabetes features come pre-scaled to unit *norm* (std 1/√442 ≈ 0.048): that trains as
    # well as standardized and passes; 10–1000× smaller again (feature_scale=0.01) does not
    d = splits("diabetes-mlp", "data.normalize=none")
    assert not q.input_scale(d.x_train).unnormalized
    s = q.input_scale(splits("diabetes-mlp", "data.normalize=none", "data.perturb.feature_scale=0.01").x_train)
    assert s.unnormalized and s.typical_rms < q.SMALL_INPUT and s.max_rms < 1


def test_raw_digit_pixels_pass_because_they_train_fine():
    # pixels 0…16: largest feature RMS 12.9, below LARGE_INPUT; measured: no loss against standardized inputs
    s = q.input_scale(splits("digits-mlp", "data.normalize=none").x_train)
    assert not s.unnormalized and 10 < s.max_rms < q.LARGE_INPUT


# ------------------------------------------------------------------ class balance

def test_class_balance_counts_ratio_entropy():
    y = torch.tensor([0] * 6 + [1] * 3 + [2] * 1)
    b = q.class_balance(y, 3)
    p = np.array([0.6, 0.3, 0.1])
    assert b.counts.tolist() == [6, 3, 1] and b.ratio == 6.0
    assert b.entropy == pytest.approx(-(p * np.log(p)).sum() / np.log(3))
    assert b.imbalanced and b.minority == [2] and b.missing == []
    assert q.class_balance(y, 3, threshold=2.0).minority == [2, 1]


def test_missing_class_is_infinite_imbalance_and_balanced_is_entropy_one():
    b = q.class_balance(torch.tensor([0, 0, 1, 1]), 3)
    assert math.isinf(b.ratio) and b.imbalanced and b.missing == [2] and b.minority == [2]
    assert b.evidence()["imbalance_ratio"] is None  # strict JSON has no inf; missing_classes says why
    assert b.entropy == pytest.approx(math.log(2) / math.log(3))
    even = q.class_balance(torch.tensor([1.0, 0.0, 1.0, 0.0]), 2)  # binary labels arrive as float 0/1
    assert even.ratio == 1.0 and even.entropy == pytest.approx(1.0) and not even.imbalanced
    with pytest.raises(ValueError, match="num_classes"):
        q.class_balance(torch.tensor([0, 3]), 2)


@pytest.mark.parametrize("recipe", [r for r in RECIPES if r != "diabetes-mlp"])
def test_builtin_classes_are_balanced_and_the_imbalance_knob_is_caught(recipe):
    d = splits(recipe)
    healthy = q.class_balance(d.y_train, d.num_classes)
    assert not healthy.imbalanced and healthy.ratio < 1.7  # measured: ≤ 1.68 (breast cancer, 37 % malignant)
    d = splits(recipe, "data.perturb.imbalance=0.1")
    bad = q.class_balance(d.y_train, d.num_classes)
    counts = np.array(d.info["class_counts"]["train"])
    assert bad.imbalanced and bad.ratio == pytest.approx(counts.max() / counts.min())
    assert bad.minority[0] == int(np.argmin(counts))


# ------------------------------------------------------------------ leakage

def test_exact_pairs_by_hand():
    train = torch.tensor([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0], [0.0, 5.0]])
    val = torch.tensor([[1.0, 2.0], [9.0, 9.0]])
    test = torch.tensor([[-0.0, 5.0], [9.0, 9.0], [7.0, 7.0]])  # -0.0 equals 0.0
    lk = q.split_leakage(train, val, test, near=False)
    assert sorted(map(tuple, lk.exact["val-train"].tolist())) == [(0, 0), (0, 2)]
    assert lk.exact["test-train"].tolist() == [[0, 3]]
    assert lk.exact["test-val"].tolist() == [[1, 1]]
    assert lk.leaked == {"val": 0.5, "test": pytest.approx(2 / 3)}
    assert lk.leaked_rows["test"].tolist() == [0, 1] and lk.train_duplicates == 1 and lk.leaking
    assert math.isnan(lk.median_nn) and all(len(v) == 0 for v in lk.near.values())


def test_an_empty_split_leaks_nothing():
    x = torch.randn(20, 1, 4)
    lk = q.split_leakage(x, x[:0], x[:3])  # data.split.val = 0
    assert lk.leaked == {"val": 0.0, "test": 1.0} and len(lk.exact["test-train"]) == 3
    assert len(lk.exact["val-train"]) == 0 and len(lk.near["test-val"]) == 0


def test_near_duplicates_equal_a_brute_force_search():
    rng = np.random.default_rng(1)
    train, val, test = rng.normal(size=(300, 6)), rng.normal(size=(40, 6)), rng.normal(size=(50, 6))
    val[:5] = train[10:15] + rng.normal(0, 0.01, size=(5, 6))
    test[7] = val[20] + 0.02
    test[8] = train[3]
    lk = q.split_leakage(*(torch.from_numpy(a) for a in (train, val, test)))

    def dist(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    d_train = dist(train, train)
    np.fill_diagonal(d_train, np.inf)
    median = np.median(d_train.min(1))
    assert lk.median_nn == pytest.approx(median)
    for key, (a, b) in {"val-train": (val, train), "test-train": (test, train), "test-val": (test, val)}.items():
        d = dist(a, b)
        d[d == 0] = np.inf  # identical rows are exact duplicates, not near ones
        rows = np.flatnonzero(d.min(1) < q.NEAR_FRACTION * median)
        assert lk.near[key].tolist() == [[i, int(d[i].argmin())] for i in rows], key
        np.testing.assert_allclose(lk.near_distance[key].numpy(), d.min(1)[rows] / median, rtol=1e-9)
    assert lk.near["val-train"][:, 1].tolist() == [10, 11, 12, 13, 14]
    assert lk.near["test-val"].tolist() == [[7, 20]] and lk.exact["test-train"].tolist() == [[8, 3]]
    assert lk.leaked == {"val": 5 / 40, "test": 2 / 50}


@pytest.mark.parametrize("recipe", RECIPES)
def test_builtin_splits_do_not_leak(recipe):
    d = splits(recipe)
    lk = q.split_leakage(d.x_train, d.x_val, d.x_test)
    # measured: no exact duplicate anywhere (digits' 1,797 images are all distinct) and the closest
    # val/test row to any train row is ≥ 0.32 × the median train nearest-neighbour distance
    assert not lk.leaking and lk.leaked == {"val": 0.0, "test": 0.0} and lk.train_duplicates == 0
    assert all(len(v) == 0 for v in [*lk.exact.values(), *lk.near.values()])


@pytest.mark.parametrize("recipe", ["digits-mlp", "mnist1d-cnn"])
def test_injected_copies_and_jittered_copies_are_exactly_the_ones_found(recipe):
    d = splits(recipe)
    xtr, xva, xte = d.x_train.clone(), d.x_val.clone(), d.x_test.clone()
    g = torch.Generator().manual_seed(0)
    src = torch.randperm(len(xtr), generator=g)[:12]
    xva[[3, 17, 40]] = xtr[src[:3]]                                  # exact copies
    xte[[5, 6]] = xtr[src[3:5]]
    jitter = 0.01 * torch.randn((7, *xtr.shape[1:]), generator=g)   # 1 % of a feature's std
    xva[[50, 51, 52]] = xtr[src[5:8]] + jitter[:3]
    xte[[60, 61, 62, 63]] = xtr[src[8:12]] + jitter[3:]
    lk = q.split_leakage(xtr, xva, xte)
    assert lk.exact["val-train"].tolist() == [[3, int(src[0])], [17, int(src[1])], [40, int(src[2])]]
    assert lk.exact["test-train"].tolist() == [[5, int(src[3])], [6, int(src[4])]]
    assert lk.near["val-train"].tolist() == [[50 + i, int(src[5 + i])] for i in range(3)]
    assert lk.near["test-train"].tolist() == [[60 + i, int(src[8 + i])] for i in range(4)]
    assert len(lk.exact["test-val"]) == 0 and len(lk.near["test-val"]) == 0
    assert lk.leaked["val"] == pytest.approx(6 / len(xva)) and lk.leaked["test"] == pytest.approx(6 / len(xte))
    assert lk.leaking  # 6 rows: > 1 % of digits' 270 val rows and of mnist1d's 400 val / 1,000 test rows


# ------------------------------------------------------------------ label noise

def test_confident_learning_by_hand():
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    p = torch.tensor([[0.9, 0.05, 0.05], [0.7, 0.2, 0.1], [0.1, 0.8, 0.1],     # row 2: class 1 labelled 0
                      [0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1],       # row 5: class 0 labelled 1
                      [0.58, 0.02, 0.40], [0.2, 0.45, 0.35]], dtype=torch.float64)
    r = q.confident_learning(p, y, 3)
    # t_j: mean p_j over rows labelled j
    np.testing.assert_allclose(r.thresholds.numpy(), [1.7 / 3, 1.8 / 3, 0.375])
    # row 6: its own p_2 = 0.40 ≥ t_2, but p_0 = 0.58 ≥ t_0 is larger, so it counts in C[2, 0] (paper eq. 1);
    # row 7 reaches no threshold and is not counted
    assert r.confident_joint.tolist() == [[2, 1, 0], [1, 2, 0], [1, 0, 0]]
    assert r.indices.tolist() == [2, 5, 6]            # by self-confidence 0.1 < 0.3 < 0.40
    assert r.suggested.tolist() == [1, 0, 0]
    np.testing.assert_allclose(r.self_confidence.numpy(), [0.1, 0.3, 0.4])
    # rows of C scaled to the label counts (3, 3, 2): [[2,1,0],[1,2,0],[2,0,0]]; Q = that / 8; 1 − trace Q = 0.5
    assert r.noise_rate == pytest.approx(0.5)
    assert r.oof_accuracy == pytest.approx(0.5) and r.flagged_fraction == pytest.approx(3 / 8)
    assert r.suggested_confidence == pytest.approx((0.8 + 0.6 + 0.58) / 3) and r.conclusive and r.noisy


def test_confident_learning_equals_a_loop_on_random_probabilities():
    rng = np.random.default_rng(2)
    k, n = 4, 300
    p = rng.dirichlet(np.ones(k) * 0.7, size=n)
    y = rng.integers(0, k, size=n)
    r = q.confident_learning(torch.from_numpy(p), torch.from_numpy(y), k)
    t = [p[y == j, j].mean() for j in range(k)]
    joint, flagged = np.zeros((k, k), dtype=int), []
    for i in range(n):
        confident = [j for j in range(k) if p[i, j] >= t[j]]
        if confident:
            best = max(confident, key=lambda j: p[i, j])
            joint[y[i], best] += 1
            if best != y[i]:
                flagged.append(i)
    assert r.confident_joint.tolist() == joint.tolist()
    assert r.indices.tolist() == sorted(flagged, key=lambda i: p[i, y[i]])
    cal = joint / joint.sum(1, keepdims=True) * np.bincount(y, minlength=k)[:, None]
    assert r.noise_rate == pytest.approx(1 - np.trace(cal) / cal.sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_injected_label_noise_on_digits_is_found(seed):
    d = splits("digits-mlp", "data.perturb.label_noise=0.2", f"seed={seed}")
    r = q.label_issues(d.x_train, d.y_train, 10, seed=seed)
    truth = set(d.info["perturb"]["label_noise"]["rows"])
    hits = len(truth & set(r.indices.tolist()))
    # measured over seeds 0–7: precision 0.963–0.985, recall 0.765–0.87, estimated noise 0.19–0.22
    assert hits / len(r.indices) >= 0.9 and hits / len(truth) >= 0.7
    assert 0.15 <= r.noise_rate <= 0.25 and r.noisy and r.conclusive
    # the most suspicious rows are nearly all truly flipped
    assert len(truth & set(r.indices[:50].tolist())) >= 48


def test_clean_digits_show_no_label_noise():
    d = splits("digits-mlp")
    r = q.label_issues(d.x_train, d.y_train, 10)
    assert r.noise_rate < 0.01 and not r.noisy and r.oof_accuracy > 0.95  # measured: ≤ 0.0024 over 8 seeds


def test_a_weak_model_is_inconclusive_not_an_accusation():
    # MNIST-1D defeats linear models and k-NN (out-of-fold accuracy ≈ 0.5): confident learning then
    # "flags" ~45 % of clean labels, but with a mean probability of the suggested class ≈ 0.27
    d = splits("mnist1d-cnn")
    r = q.label_issues(d.x_train, d.y_train, 10)
    assert r.oof_accuracy < 0.7 and r.suggested_confidence < q.CONFIDENT
    assert not r.conclusive and not r.noisy


def test_out_of_fold_probabilities_are_deterministic_distributions():
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.normal(size=(60, 5)))
    y = torch.from_numpy(np.r_[np.zeros(30), np.ones(28), 2 * np.ones(2)].astype(np.int64))  # class 2: 2 rows < 5 folds
    p = q.out_of_fold_probs(x, y, 4, seed=5)
    assert p.shape == (60, 4) and torch.allclose(p.sum(1), torch.ones(60, dtype=p.dtype))
    assert bool((p[:, 3] == 0).all())  # a class no fold has seen gets probability 0
    assert torch.equal(p, q.out_of_fold_probs(x, y, 4, seed=5))
    assert not torch.equal(p, q.out_of_fold_probs(x, y, 4, seed=6))
    with pytest.raises(ValueError, match="unknown model"):
        q.label_issues(x, y, 4, model="forest")


def test_evidence_is_plain_numbers():
    d = splits("wine-mlp")
    for result in [q.input_scale(d.x_train), q.class_balance(d.y_train, 3),
                   q.split_leakage(d.x_train, d.x_val, d.x_test), q.label_issues(d.x_train, d.y_train, 3)]:
        ev = result.evidence()
        assert ev and all(v is None or isinstance(v, (int, float, list)) for v in ev.values()), ev
        json.dumps(ev, allow_nan=False)
    # nothing flagged: no suggested class to average, so None rather than NaN
    assert q.label_issues(d.x_train, d.y_train, 3).evidence()["suggested_confidence"] is None
