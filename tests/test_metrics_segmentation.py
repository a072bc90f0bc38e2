"""Segmentation metrics against an independent NumPy computation and scikit-learn on flattened pixels."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as sk

from goodfit import metrics as gm
from goodfit.errors import UserError

TOL = 1e-9
CASES = 120


def reference(pred: np.ndarray, target: np.ndarray, c: int, ignore_index) -> dict:
    """Per-class IoU / Dice by explicit pixel masks, class by class (NaN for a class nowhere)."""
    keep = np.ones(target.shape, bool) if ignore_index is None else target != ignore_index
    iou, dice = np.full(c, np.nan), np.full(c, np.nan)
    for k in range(c):
        t, p = (target == k) & keep, (pred == k) & keep
        inter, union = (t & p).sum(), (t | p).sum()
        if union:
            iou[k] = inter / union
            dice[k] = 2 * inter / (t.sum() + p.sum())
    correct, counted = ((pred == target) & keep).sum(), keep.sum()
    return {"iou": iou, "dice_per_class": dice, "mean_iou": np.nanmean(iou) if counted else np.nan,
            "dice": np.nanmean(dice) if counted else np.nan,
            "pixel_accuracy": correct / counted if counted else np.nan}


def segmentation_case(seed: int):
    rng = np.random.default_rng(60_000 + seed)
    c = int(rng.integers(2, 7))
    n, h, w = int(rng.integers(1, 4)), int(rng.integers(1, 10)), int(rng.integers(1, 10))
    classes = np.arange(c) if seed % 4 else rng.choice(c, size=max(1, c - 2), replace=False)  # absent classes
    target = rng.choice(classes, size=(n, h, w))
    logits = rng.normal(size=(n, c, h, w))
    logits[:, 0] += 0.5  # a dominant background
    if seed % 5 == 2:
        logits = logits.round(0)  # ties: the first class wins
    ignore_index = [None, 255, -1, 0][seed % 4]
    if ignore_index is not None:
        target[rng.random(target.shape) < 0.2] = ignore_index
    dtype = [torch.float32, torch.float16, torch.bfloat16, torch.float64][seed % 4]
    logits_t = torch.from_numpy(logits).to(dtype)
    pred = logits_t.to(torch.float64).numpy().argmax(1)
    return rng, c, logits_t, pred, torch.from_numpy(target), ignore_index


@pytest.mark.parametrize("seed", range(CASES))
def test_segmentation_matches_numpy_and_sklearn(seed):
    rng, c, logits, pred, target, ignore_index = segmentation_case(seed)
    t = target.numpy()
    ref = reference(pred, t, c, ignore_index)

    # streamed over uneven batches of images, from logits or from label maps
    acc = gm.make_metrics("segmentation", ["pixel_accuracy", "mean_iou", "dice"], num_classes=c,
                          ignore_index=ignore_index)
    output = logits if seed % 2 else torch.from_numpy(pred)
    cuts = np.sort(rng.integers(0, target.shape[0] + 1, size=2))
    for a, b in zip([0, *cuts], [*cuts, target.shape[0]]):
        acc.update(output[a:b], target[a:b])
    got = acc.compute()
    for name in ("pixel_accuracy", "mean_iou", "dice"):
        if math.isnan(ref[name]):
            assert math.isnan(got[name])
        else:
            assert abs(got[name] - ref[name]) <= TOL, name
    per_class = acc.per_class()
    np.testing.assert_allclose(per_class["iou"], ref["iou"], atol=TOL, equal_nan=True)
    np.testing.assert_allclose(per_class["dice"], ref["dice_per_class"], atol=TOL, equal_nan=True)

    # the functions, and scikit-learn on the flattened counted pixels
    kw = {"num_classes": c, "ignore_index": ignore_index}
    inputs = [logits, pred, pred.tolist()][seed % 3]
    np.testing.assert_allclose(gm.iou(inputs, t, **kw), ref["iou"], atol=TOL, equal_nan=True)
    np.testing.assert_allclose(gm.dice(inputs, t, per_class=True, **kw), ref["dice_per_class"], atol=TOL,
                               equal_nan=True)
    keep = np.ones(t.shape, bool) if ignore_index is None else t != ignore_index
    y, p = t[keep], pred[keep]
    assert np.array_equal(acc.confusion_matrix(), sk.confusion_matrix(y, p, labels=np.arange(c)))
    if y.size:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert abs(gm.mean_iou(inputs, t, **kw) - sk.jaccard_score(y, p, average="macro")) <= TOL
            assert abs(gm.dice(inputs, t, **kw) - sk.f1_score(y, p, average="macro")) <= TOL
            assert abs(gm.pixel_accuracy(inputs, t, **kw) - sk.accuracy_score(y, p)) <= TOL
            present = np.union1d(y, p)
            np.testing.assert_allclose(gm.iou(inputs, t, **kw)[present],
                                       sk.jaccard_score(y, p, labels=present, average=None), atol=TOL)


def test_binary_single_channel_logits_threshold_at_zero():
    logits = torch.tensor([[[[-1.0, 2.0], [0.5, -3.0]]]])  # (N=1, 1, 2, 2)
    target = torch.tensor([[[0, 1], [0, 0]]])
    expected = sk.jaccard_score([0, 1, 0, 0], [0, 1, 1, 0], average=None)
    np.testing.assert_allclose(gm.iou(logits, target), expected)
    assert gm.pixel_accuracy(logits, target) == 0.75


def test_num_classes_is_inferred_without_ignored_pixels():
    target = np.array([[[0, 1, 255]]])
    pred = np.array([[[0, 1, 1]]])
    assert gm.iou(pred, target, ignore_index=255).shape == (2,)
    assert gm.pixel_accuracy(pred, target, ignore_index=255) == 1.0


def test_labels_outside_the_class_range_raise_unless_ignored():
    acc = gm.make_metrics("segmentation", ["mean_iou"], num_classes=3)
    acc.update(torch.zeros(1, 3, 2, 2), torch.tensor([[[0, 1], [2, 255]]]))
    with pytest.raises(ValueError, match=r"1 pixel labels lie outside the class range \[0, 3\)"):
        acc.compute()
    acc = gm.make_metrics("segmentation", ["mean_iou"], num_classes=3, ignore_index=255)
    acc.update(torch.zeros(1, 3, 2, 2), torch.tensor([[[0, 1], [2, 255]]]))
    assert acc.compute()["mean_iou"] == pytest.approx((1 / 3 + 0 + 0) / 3)  # all predicted 0
    acc = gm.SegmentationMetrics(3, ["pixel_accuracy"])
    acc.update(torch.tensor([[[0, 4]]]), torch.tensor([[[0, 1]]]))  # a predicted label out of range
    with pytest.raises(ValueError, match="outside the class range"):
        acc.compute()


def test_segmentation_shape_and_name_errors():
    acc = gm.SegmentationMetrics(3)
    with pytest.raises(ValueError, match=r"3 channels"):
        acc.update(torch.zeros(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="do not match"):
        acc.update(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer class maps"):
        acc.update(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2))
    with pytest.raises(UserError, match="did you mean 'mean_iou'"):
        gm.make_metrics("segmentation", ["miou"], num_classes=3)
    assert all(math.isnan(v) for v in acc.compute().values())


def test_update_never_reads_values_on_the_host():
    acc = gm.make_metrics("segmentation", gm.TASK_METRICS["segmentation"], num_classes=4, ignore_index=255)
    for _ in range(2):
        acc.update(torch.randn(2, 4, 5, 5, device="meta"), torch.zeros(2, 5, 5, dtype=torch.long, device="meta"))


def test_volumes_work_too():
    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.normal(size=(2, 3, 4, 4, 4)))
    target = torch.from_numpy(rng.integers(0, 3, size=(2, 4, 4, 4)))
    pred = logits.numpy().argmax(1)
    assert abs(gm.mean_iou(logits, target) - sk.jaccard_score(target.numpy().ravel(), pred.ravel(),
                                                              average="macro")) <= TOL
