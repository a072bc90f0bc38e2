"""Detection metrics against independent computations: pycocotools for COCO mAP (the reference
evaluator; goodfit computes with faster-coco-eval), the VOC devkit's formulas for VOC AP and a
scalar formula for box IoU."""
from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from goodfit.errors import UserError
from goodfit.metrics.detection import COCO_STATS, box_iou, coco_map, voc_ap, voc_class_ap

SEEDS = range(24)
SIZES = {"small": (3, 30), "medium": (33, 95), "large": (100, 300)}  # box side ranges, pixels


# ---------------------------------------------------------------------------- synthetic COCO sets

def synthetic_coco(seed: int) -> tuple[dict, list]:
    """A seeded COCO ground-truth dict and detection list: several categories (label 0 included),
    crowd boxes, images without ground truth, images without detections, boxes of all three
    COCO sizes, near misses, duplicates, wrong labels, false positives, and some sets with more
    than 100 detections in one image (so maxDets 1/10/100 differ)."""
    rng = np.random.default_rng(seed)
    n_images = int(rng.integers(4, 12))
    n_cats = int(rng.integers(1, 5))
    cats = list(range(0, n_cats)) if seed % 2 else list(range(1, n_cats + 1))
    images, anns, dets = [], [], []
    for img in range(1, n_images + 1):
        images.append({"id": img, "width": 640, "height": 480})
        n_gt = 0 if rng.random() < 0.2 else int(rng.integers(1, 9))
        for _ in range(n_gt):
            lo, hi = SIZES[rng.choice(list(SIZES))]
            w, h = rng.uniform(lo, hi, size=2)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            crowd = int(rng.random() < 0.1)
            # area decides the size bucket; make it differ from w*h sometimes (like a mask's area)
            area = float(w * h * (rng.uniform(0.5, 1.0) if rng.random() < 0.3 else 1.0))
            cat = int(rng.choice(cats))
            anns.append({"id": len(anns) + 1, "image_id": img, "category_id": cat, "iscrowd": crowd,
                         "bbox": [float(x), float(y), float(w), float(h)], "area": area})
            if rng.random() < 0.15:  # this image gets no detections of its objects
                continue
            for _ in range(int(rng.integers(1, 3))):  # a hit, sometimes a duplicate
                jitter = rng.normal(0, 0.12, size=4) * [w, h, w, h]
                bx, by = x + jitter[0], y + jitter[1]
                bw, bh = max(1.0, w + jitter[2]), max(1.0, h + jitter[3])
                label = cat if rng.random() < 0.85 else int(rng.choice(cats))
                dets.append({"image_id": img, "category_id": label, "score": float(rng.random()),
                             "bbox": [float(bx), float(by), float(bw), float(bh)]})
        n_false = 120 if (seed % 5 == 0 and img == 1) else int(rng.integers(0, 4))
        for _ in range(n_false):
            lo, hi = SIZES[rng.choice(list(SIZES))]
            w, h = rng.uniform(lo, hi, size=2)
            dets.append({"image_id": img, "category_id": int(rng.choice(cats)), "score": float(rng.random()),
                         "bbox": [float(rng.uniform(0, 640 - w)), float(rng.uniform(0, 480 - h)),
                                  float(w), float(h)]})
    if not dets:  # pycocotools' loadRes cannot take an empty list
        dets.append({"image_id": 1, "category_id": cats[0], "score": 0.5, "bbox": [1.0, 2.0, 30.0, 40.0]})
    categories = [{"id": c, "name": f"c{c}"} for c in cats]
    dataset = {"images": images, "annotations": anns, "categories": categories}
    return dataset, dets


def pycocotools_stats(dataset: dict, dets: list, iou_type: str = "bbox") -> np.ndarray:
    """The reference: pycocotools' COCOeval, run on copies."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(dataset)
        gt.createIndex()
        dt = gt.loadRes(copy.deepcopy(dets))
        ev = COCOeval(gt, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


def as_per_image(dataset: dict, dets: list, give_area: bool) -> tuple[list, list]:
    """The same set as per-image tensor dicts (xyxy, float64)."""
    preds, targets = [], []
    for image in dataset["images"]:
        gts = [a for a in dataset["annotations"] if a["image_id"] == image["id"]]
        ds = [d for d in dets if d["image_id"] == image["id"]]
        xyxy = lambda b: [b[0], b[1], b[0] + b[2], b[1] + b[3]]  # noqa: E731
        t = {"boxes": torch.tensor([xyxy(a["bbox"]) for a in gts], dtype=torch.float64).reshape(-1, 4),
             "labels": torch.tensor([a["category_id"] for a in gts], dtype=torch.int64),
             "iscrowd": torch.tensor([a["iscrowd"] for a in gts], dtype=torch.int64)}
        if give_area:
            t["area"] = torch.tensor([a["area"] for a in gts], dtype=torch.float64)
        targets.append(t)
        boxes = torch.tensor([xyxy(d["bbox"]) for d in ds], dtype=torch.float64).reshape(-1, 4)
        preds.append({"boxes": boxes,
                      "scores": torch.tensor([d["score"] for d in ds], dtype=torch.float64),
                      "labels": torch.tensor([d["category_id"] for d in ds], dtype=torch.int64)})
    return preds, targets


def assert_stats_equal(ours: dict, reference: np.ndarray) -> None:
    assert list(ours) == list(COCO_STATS)
    got = np.array([ours[k] for k in COCO_STATS])
    assert all(type(v) is float for v in ours.values())
    np.testing.assert_allclose(got, reference, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_coco_map_equals_pycocotools_coco_format(seed):
    dataset, dets = synthetic_coco(seed)
    before = copy.deepcopy((dataset, dets))
    reference = pycocotools_stats(dataset, dets)
    assert_stats_equal(coco_map(dets, dataset), reference)
    assert (dataset, dets) == before  # the caller's dicts are not modified


@pytest.mark.parametrize("seed", SEEDS)
def test_coco_map_equals_pycocotools_per_image_tensors(seed):
    dataset, dets = synthetic_coco(seed)
    give_area = seed % 3 != 0
    if not give_area:  # without an area, a target's area is its box area
        for a in dataset["annotations"]:
            a["area"] = a["bbox"][2] * a["bbox"][3]
    preds, targets = as_per_image(dataset, dets, give_area)
    assert_stats_equal(coco_map(preds, targets), pycocotools_stats(dataset, dets))


def test_the_synthetic_sets_cover_the_cases():
    """Guard the generator: the cases the equality tests claim to cover do occur."""
    seen = {"crowd": 0, "no_gt": 0, "no_det": 0, "small": 0, "medium": 0, "large": 0, "many": 0, "cats>1": 0}
    for seed in SEEDS:
        dataset, dets = synthetic_coco(seed)
        seen["cats>1"] += len(dataset["categories"]) > 1
        for a in dataset["annotations"]:
            seen["crowd"] += a["iscrowd"]
            seen["small" if a["area"] < 32**2 else "medium" if a["area"] < 96**2 else "large"] += 1
        for image in dataset["images"]:
            seen["no_gt"] += not any(a["image_id"] == image["id"] for a in dataset["annotations"])
            n = sum(d["image_id"] == image["id"] for d in dets)
            seen["no_det"] += n == 0
            seen["many"] += n > 100
    assert all(v > 0 for v in seen.values()), seen


def test_coco_map_float32_boxes_are_close():
    dataset, dets = synthetic_coco(3)
    preds, targets = as_per_image(dataset, dets, give_area=True)
    for d in preds + targets:
        d["boxes"] = d["boxes"].float()
    got = np.array(list(coco_map(preds, targets).values()))
    np.testing.assert_allclose(got, pycocotools_stats(dataset, dets), atol=1e-3)


def random_masks(rng, k: int, h: int, w: int) -> np.ndarray:
    """k blobs (filled ellipses) of varied size in an h x w image."""
    yy, xx = np.mgrid[:h, :w]
    masks = np.zeros((k, h, w), dtype=bool)
    for i in range(k):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(2, h / 2, size=2)
        masks[i] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return masks


@pytest.mark.parametrize("seed", range(4))
def test_coco_map_segm_equals_pycocotools(seed):
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(100 + seed)
    h, w = 150, 170
    preds, targets, images, anns, dets = [], [], [], [], []
    for img in range(1, 6):
        gt = random_masks(rng, int(rng.integers(0, 5)), h, w)
        # predictions: each target dilated/shifted a little, plus a random blob
        shifted = [np.roll(m, tuple(rng.integers(-4, 5, size=2)), axis=(0, 1)) for m in gt]
        shifted = np.stack(shifted) if len(gt) else gt
        dt = np.concatenate([shifted, random_masks(rng, 1, h, w)])
        labels = rng.integers(1, 3, size=len(gt))
        dlabels = np.concatenate([labels, rng.integers(1, 3, size=1)])
        scores = rng.random(len(dt))
        crowd = (rng.random(len(gt)) < 0.1).astype(int)
        targets.append({"masks": torch.from_numpy(gt), "labels": torch.from_numpy(labels),
                        "iscrowd": torch.from_numpy(crowd)})
        preds.append({"masks": torch.from_numpy(dt), "labels": torch.from_numpy(dlabels),
                      "scores": torch.from_numpy(scores)})
        images.append({"id": img, "height": h, "width": w})
        for m, c, cr in zip(gt, labels, crowd):
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            anns.append({"id": len(anns) + 1, "image_id": img, "category_id": int(c), "iscrowd": int(cr),
                         "segmentation": rle, "area": float(mask_utils.area(rle)),
                         "bbox": list(mask_utils.toBbox(rle))})
        for m, c, s in zip(dt, dlabels, scores):
            dets.append({"image_id": img, "category_id": int(c), "score": float(s),
                         "segmentation": mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))})
    dataset = {"images": images, "annotations": anns, "categories": [{"id": 1}, {"id": 2}]}
    reference = pycocotools_stats(dataset, dets, "segm")
    assert_stats_equal(coco_map(preds, targets, iou_type="segm"), reference)
    before = copy.deepcopy((dataset, dets))
    assert_stats_equal(coco_map(dets, dataset, iou_type="segm"), reference)
    assert (dataset, dets) == before


def test_coco_map_edge_cases():
    box = {"boxes": torch.tensor([[10.0, 10.0, 60.0, 70.0]]), "labels": torch.tensor([2])}
    perfect = coco_map([{**box, "scores": torch.tensor([0.9])}], [box])
    assert perfect["map"] == perfect["map_50"] == perfect["mar_100"] == perfect["map_medium"] == 1.0
    assert perfect["map_small"] == perfect["map_large"] == -1.0  # no ground truth of that size
    no_dets = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0),
               "labels": torch.zeros(0, dtype=torch.long)}
    missed = coco_map([no_dets], [box])
    assert missed["map"] == 0.0 and missed["mar_100"] == 0.0
    no_gt = coco_map([{**box, "scores": torch.tensor([0.9])}], [{"boxes": [], "labels": []}])
    assert set(no_gt.values()) == {-1.0}
    # plain lists work too
    assert coco_map([{"boxes": [[10, 10, 60, 70]], "scores": [0.9], "labels": [2]}],
                    [{"boxes": [[10, 10, 60, 70]], "labels": [2]}]) == perfect
    # COCO format with no detections at all (pycocotools itself cannot evaluate this)
    dataset = {"images": [{"id": 7}], "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "iscrowd": 0,
                                                       "bbox": [0, 0, 10, 10], "area": 100.0}],
               "categories": [{"id": 1}]}
    assert coco_map([], dataset)["map"] == 0.0


def test_coco_map_prints_nothing(capfd):
    dataset, dets = synthetic_coco(1)
    coco_map(dets, dataset)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_coco_map_bad_input():
    t = [{"boxes": torch.zeros(1, 4), "labels": torch.zeros(1, dtype=torch.long)}]
    p = [{"boxes": torch.zeros(1, 4), "scores": torch.ones(1), "labels": torch.zeros(1, dtype=torch.long)}]
    with pytest.raises(UserError, match="iou_type"):
        coco_map(p, t, iou_type="keypoints")
    with pytest.raises(ValueError, match="2 prediction dicts for 1"):
        coco_map(p * 2, t)
    with pytest.raises(UserError, match="scores"):
        coco_map([{"boxes": torch.zeros(1, 4), "labels": torch.zeros(1)}], t)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        coco_map([{**p[0], "boxes": torch.zeros(1, 5)}], t)
    with pytest.raises(ValueError, match="scores"):
        coco_map([{**p[0], "scores": torch.ones(2)}], t)
    with pytest.raises(UserError, match="images"):
        coco_map([], {"annotations": []})
    with pytest.raises(UserError, match="at least one image"):
        coco_map([], [])


# ---------------------------------------------------------------------------- box IoU

def iou_scalar(a, b) -> float:
    """IoU of two xyxy boxes, written out."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def random_xyxy(rng, n: int) -> np.ndarray:
    xy = rng.uniform(0, 50, size=(n, 2))
    wh = rng.uniform(0, 30, size=(n, 2)) * (rng.random((n, 1)) > 0.05)  # a few zero-size boxes
    return np.concatenate([xy, xy + wh], axis=1)


@pytest.mark.parametrize("seed", range(5))
def test_box_iou_equals_the_formula(seed):
    rng = np.random.default_rng(seed)
    a, b = random_xyxy(rng, 13), random_xyxy(rng, 9)
    b[0] = a[0]  # an identical pair
    expected = np.array([[iou_scalar(x, y) for y in b] for x in a])
    got = box_iou(torch.from_numpy(a), torch.from_numpy(b))
    assert got.shape == (13, 9) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-15)
    xywh = lambda x: np.concatenate([x[:, :2], x[:, 2:] - x[:, :2]], axis=1)  # noqa: E731
    cxcywh = lambda x: np.concatenate([(x[:, :2] + x[:, 2:]) / 2, x[:, 2:] - x[:, :2]], axis=1)  # noqa: E731
    np.testing.assert_allclose(box_iou(xywh(a), xywh(b), fmt="xywh").numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(box_iou(cxcywh(a), cxcywh(b), fmt="cxcywh").numpy(), expected, atol=1e-12)
    f32 = box_iou(torch.from_numpy(a).float(), torch.from_numpy(b).float())
    assert f32.dtype == torch.float32
    np.testing.assert_allclose(f32.numpy(), expected, atol=1e-5)


CORNERS = st.lists(st.floats(0, 100), min_size=4, max_size=4)


@settings(max_examples=60, deadline=None)
@given(CORNERS, CORNERS)
def test_box_iou_properties(p, q):
    def xyxy(v):
        return torch.tensor([[min(v[0], v[2]), min(v[1], v[3]), max(v[0], v[2]), max(v[1], v[3])]],
                            dtype=torch.float64)

    a, b = xyxy(p), xyxy(q)
    ab, ba = box_iou(a, b), box_iou(b, a)
    assert 0.0 <= float(ab) <= 1.0 and float(ab) == pytest.approx(float(ba), abs=1e-12)
    assert float(ab) == pytest.approx(iou_scalar(a[0].tolist(), b[0].tolist()), abs=1e-12)
    if float((a[0, 2] - a[0, 0]) * (a[0, 3] - a[0, 1])) > 0:
        assert float(box_iou(a, a)) == pytest.approx(1.0, abs=1e-12)


def test_box_iou_shapes_and_errors():
    assert box_iou(torch.zeros(0, 4), torch.zeros(3, 4)).shape == (0, 3)
    assert box_iou([[0, 0, 2, 2]], [[1, 1, 3, 3], [5, 5, 6, 6]]).tolist() == [[1 / 7, 0.0]]
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        box_iou(torch.zeros(3, 5), torch.zeros(3, 4))
    with pytest.raises(UserError, match="box format"):
        box_iou(torch.zeros(1, 4), torch.zeros(1, 4), fmt="yxyx")


# ---------------------------------------------------------------------------- VOC AP

def devkit_voc_ap(rec, prec, use_07_metric=False):
    """voc_ap from the PASCAL VOC devkit's Python port (py-faster-rcnn's voc_eval.py), verbatim logic."""
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            if np.sum(rec >= t) == 0:
                p = 0
            else:
                p = np.max(prec[rec >= t])
            ap = ap + p / 11.0
    else:
        mrec = np.concatenate(([0.0], rec, [1.0]))
        mpre = np.concatenate(([0.0], prec, [0.0]))
        for i in range(mpre.size - 1, 0, -1):
            mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
        i = np.where(mrec[1:] != mrec[:-1])[0]
        ap = np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])
    return ap


@pytest.mark.parametrize("use_07", [False, True])
def test_voc_ap_equals_the_devkit(use_07):
    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(0, 40))
        hits = rng.random(n) < rng.random()
        npos = max(1, int(hits.sum()) + int(rng.integers(0, 5)))
        tp, fp = np.cumsum(hits), np.cumsum(~hits)
        rec = tp / npos
        prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        assert voc_ap(rec, prec, use_07) == pytest.approx(devkit_voc_ap(rec, prec, use_07), abs=1e-12)
    assert voc_ap([1.0], [1.0], use_07) == pytest.approx(1.0)


def devkit_voc_eval(preds, targets, cls, ovthresh):
    """voc_eval's per-class loop (py-faster-rcnn), with continuous-coordinate IoU."""
    class_recs, npos = {}, 0
    for i, t in enumerate(targets):
        sel = [k for k, lab in enumerate(t["labels"]) if lab == cls]
        difficult = np.array([t.get("difficult", [False] * len(t["labels"]))[k] for k in sel], dtype=bool)
        class_recs[i] = {"bbox": np.array([t["boxes"][k] for k in sel]).reshape(-1, 4),
                         "difficult": difficult, "det": [False] * len(sel)}
        npos += int((~difficult).sum())
    image_ids, confidence, boxes = [], [], []
    for i, p in enumerate(preds):
        for k, lab in enumerate(p["labels"]):
            if lab == cls:
                image_ids.append(i)
                confidence.append(p["scores"][k])
                boxes.append(p["boxes"][k])
    order = np.argsort(-np.array(confidence), kind="stable")
    nd = len(order)
    tp, fp = np.zeros(nd), np.zeros(nd)
    for d in range(nd):
        R = class_recs[image_ids[order[d]]]
        bb = boxes[order[d]]
        ovmax, jmax = -np.inf, -1
        BBGT = R["bbox"]
        if BBGT.size > 0:
            ixmin = np.maximum(BBGT[:, 0], bb[0])
            iymin = np.maximum(BBGT[:, 1], bb[1])
            ixmax = np.minimum(BBGT[:, 2], bb[2])
            iymax = np.minimum(BBGT[:, 3], bb[3])
            iw = np.maximum(ixmax - ixmin, 0.0)
            ih = np.maximum(iymax - iymin, 0.0)
            inters = iw * ih
            uni = ((bb[2] - bb[0]) * (bb[3] - bb[1])
                   + (BBGT[:, 2] - BBGT[:, 0]) * (BBGT[:, 3] - BBGT[:, 1]) - inters)
            overlaps = inters / uni
            ovmax, jmax = np.max(overlaps), np.argmax(overlaps)
        if ovmax > ovthresh:
            if not R["difficult"][jmax]:
                if not R["det"][jmax]:
                    tp[d] = 1.0
                    R["det"][jmax] = True
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return rec, prec, npos


@pytest.mark.parametrize("seed", range(6))
def test_voc_class_ap_equals_voc_eval(seed):
    dataset, dets = synthetic_coco(seed)
    preds, targets = as_per_image(dataset, dets, give_area=False)
    rng = np.random.default_rng(seed)
    plain_preds = [{k: v.tolist() for k, v in p.items()} for p in preds]
    plain_targets = []
    for t in targets:
        t["difficult"] = torch.from_numpy(rng.random(len(t["labels"])) < 0.15)
        plain_targets.append({k: v.tolist() for k, v in t.items()})
    for use_07 in (False, True):
        ours = voc_class_ap(preds, targets, iou_threshold=0.5, use_07_metric=use_07)
        expected = {}
        for c in sorted({c["id"] for c in dataset["categories"]}):
            rec, prec, npos = devkit_voc_eval(plain_preds, plain_targets, c, 0.5)
            if npos:
                expected[c] = devkit_voc_ap(rec, prec, use_07)
        assert ours.keys() == expected.keys()
        for c in expected:
            assert ours[c] == pytest.approx(expected[c], abs=1e-12)


def test_voc_class_ap_perfect_and_missed():
    t = [{"boxes": [[0, 0, 10, 10], [20, 20, 40, 40]], "labels": [1, 2]}]
    p = [{"boxes": [[0, 0, 10, 10]], "scores": [0.9], "labels": [1]}]
    assert voc_class_ap(p, t) == {1: 1.0, 2: 0.0}
