"""Detection metrics: box IoU, COCO mAP (through faster-coco-eval) and PASCAL VOC AP.

Conventions:
- Boxes are in pixels with continuous coordinates: a box ``(x1, y1, x2, y2)`` has area
  ``(x2 - x1) * (y2 - y1)`` (COCO's convention; no "+1" pixel). ``box_iou`` accepts "xyxy",
  "xywh" (COCO's ``[x, y, width, height]``) and "cxcywh". Two boxes whose union is empty
  (both degenerate) have IoU 0, as in COCO's ``bbIou``.
- ``coco_map`` returns the 12 numbers of COCOeval's ``summarize()`` under readable names
  (``COCO_STATS``), computed by faster-coco-eval, whose numbers are identical to
  pycocotools' (tested on seeded sets with crowd boxes, empty images, several categories and
  all three size ranges). A statistic COCO cannot define (no ground truth in that size range,
  for example) is -1.0, exactly as COCOeval reports it. Values are fractions in [0, 1].
- ``voc_ap`` is the PASCAL VOC devkit's AP of one precision/recall curve: the all-point
  interpolated area (VOC2010+) or the 11-point interpolation (VOC2007).

The reference library is imported inside ``coco_map`` only, so importing this module is cheap.
"""
from __future__ import annotations

import contextlib
import gc
import io
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from goodfit.errors import UserError

__all__ = ["COCO_STATS", "BOX_FORMATS", "box_iou", "coco_map", "voc_ap", "voc_class_ap"]

#: The 12 COCOeval statistics, in the order of pycocotools' ``COCOeval.stats``.
COCO_STATS = (
    "map", "map_50", "map_75", "map_small", "map_medium", "map_large",
    "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large",
)
BOX_FORMATS = ("xyxy", "xywh", "cxcywh")
IOU_TYPES = ("bbox", "segm")


# ---------------------------------------------------------------------------- box IoU

def _boxes(x, what: str) -> Tensor:
    """A (K, 4) floating tensor from a tensor, array or list."""
    t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float64))
    if t.ndim == 1 and t.numel() == 0:
        t = t.reshape(0, 4)
    if t.ndim != 2 or t.shape[1] != 4:
        raise ValueError(f"{what} must have shape (N, 4), got {tuple(t.shape)}")
    return t if t.is_floating_point() else t.to(torch.get_default_dtype())


def _to_xyxy(b: Tensor, fmt: str) -> Tensor:
    if fmt == "xyxy":
        return b
    if fmt == "xywh":
        return torch.cat([b[:, :2], b[:, :2] + b[:, 2:]], dim=1)
    if fmt == "cxcywh":
        half = b[:, 2:] / 2
        return torch.cat([b[:, :2] - half, b[:, :2] + half], dim=1)
    raise UserError(f"unknown box format {fmt!r}", hint=f"use one of {', '.join(BOX_FORMATS)}")


def box_iou(boxes1, boxes2, fmt: str = "xyxy") -> Tensor:
    """Pairwise IoU of boxes1 (N, 4) and boxes2 (M, 4): a (N, M) tensor.

    fmt is "xyxy" (corners), "xywh" (top-left corner, width, height: COCO) or "cxcywh"
    (centre, width, height). Area is (x2 - x1) * (y2 - y1); an empty union gives IoU 0.
    The result has the promoted floating dtype of the inputs and stays on their device.
    """
    b1 = _to_xyxy(_boxes(boxes1, "boxes1"), fmt)
    b2 = _to_xyxy(_boxes(boxes2, "boxes2"), fmt)
    dtype = torch.promote_types(b1.dtype, b2.dtype)
    b1, b2 = b1.to(dtype), b2.to(device=b1.device, dtype=dtype)
    area1 = (b1[:, 2] - b1[:, 0]).clamp(min=0) * (b1[:, 3] - b1[:, 1]).clamp(min=0)
    area2 = (b2[:, 2] - b2[:, 0]).clamp(min=0) * (b2[:, 3] - b2[:, 1]).clamp(min=0)
    lt = torch.maximum(b1[:, None, :2], b2[None, :, :2])
    rb = torch.minimum(b1[:, None, 2:], b2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return torch.where(union > 0, inter / union.where(union > 0, torch.ones_like(union)),
                       torch.zeros_like(union))


# ---------------------------------------------------------------------------- COCO mAP

def _is_coco_format(predictions, targets) -> bool:
    """COCO format: a ground-truth dataset dict and a list of detection dicts."""
    if isinstance(targets, Mapping):
        if "annotations" not in targets or "images" not in targets:
            raise UserError("a COCO ground-truth dict needs 'images' and 'annotations'",
                            hint="pass the dataset dict as loaded from instances_*.json, or a list "
                                 "of per-image dicts {boxes, labels}")
        if not isinstance(predictions, Sequence) or isinstance(predictions, (str, Mapping)):
            raise UserError("with a COCO ground-truth dict, predictions must be a list of detection "
                            "dicts {image_id, category_id, bbox, score}")
        return True
    if isinstance(targets, Sequence) and not isinstance(targets, str):
        return False
    raise UserError(f"targets must be a list of per-image dicts or a COCO dataset dict, got "
                    f"{type(targets).__name__}")


def _field(d: Mapping, key: str, i: int, what: str):
    if not isinstance(d, Mapping):
        raise UserError(f"{what}[{i}] must be a dict, got {type(d).__name__}")
    if key not in d:
        raise UserError(f"{what}[{i}] has no {key!r}",
                        hint="predictions need boxes, scores, labels; targets need boxes, labels "
                             "(optional iscrowd, area); with iou_type='segm', masks instead of boxes")
    return d[key]


def _column(d: Mapping, key: str, i: int, what: str, n: int, dtype, default=None) -> np.ndarray:
    """d[key] as an array of n values; `default` repeated when the key is absent and a default is given."""
    if key not in d and default is not None:
        return np.full(n, default, dtype=dtype)
    x = _field(d, key, i, what)
    a = (x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)).reshape(-1)
    if a.shape[0] != n:
        raise ValueError(f"{what}[{i}]['{key}'] has {a.shape[0]} entries for {n} objects")
    return a.astype(dtype)


def _box_rows(d: Mapping, i: int, what: str) -> Tensor:
    """d['boxes'] as a (K, 4) float64 CPU tensor."""
    return _boxes(_field(d, "boxes", i, what), f"{what}[{i}]['boxes']").detach().cpu().to(torch.float64)


def _regions(d: Mapping, i: int, what: str, iou_type: str) -> tuple[list, tuple[int, int] | None]:
    """The objects of one image as COCO regions: [x, y, w, h] boxes, or mask RLEs and (H, W)."""
    if iou_type == "bbox":
        b = _box_rows(d, i, what)
        return torch.cat([b[:, :2], b[:, 2:] - b[:, :2]], dim=1).tolist(), None
    from faster_coco_eval.core import mask as mask_utils

    x = _field(d, "masks", i, what)
    m = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    if m.ndim != 3:
        raise ValueError(f"{what}[{i}]['masks'] must have shape (K, H, W), got {m.shape}")
    if m.shape[0] == 0:
        return [], m.shape[1:]
    hwk = np.asfortranarray(np.transpose(m != 0, (1, 2, 0)).astype(np.uint8))
    return mask_utils.encode(hwk), m.shape[1:]


def _areas(regions: list, iou_type: str) -> list[float]:
    """COCO's default object areas: box area, or mask area."""
    if iou_type == "bbox":
        return [w * h for _, _, w, h in regions]
    from faster_coco_eval.core import mask as mask_utils

    return [float(a) for a in mask_utils.area(regions)] if regions else []


def _per_image_to_coco(predictions: Sequence, targets: Sequence, iou_type: str) -> tuple[dict, list]:
    """Per-image tensor dicts as a COCO ground-truth dataset and a list of detections."""
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} prediction dicts for {len(targets)} target dicts "
                         "(one dict per image in both)")
    key = "bbox" if iou_type == "bbox" else "segmentation"
    images, annotations, detections, categories = [], [], [], set()
    for i, (pred, tgt) in enumerate(zip(predictions, targets)):
        image_id = i + 1
        regions, size = _regions(tgt, i, "targets", iou_type)
        n = len(regions)
        labels = _column(tgt, "labels", i, "targets", n, np.int64).tolist()
        crowd = _column(tgt, "iscrowd", i, "targets", n, np.int64, default=0).tolist()
        areas = (_column(tgt, "area", i, "targets", n, np.float64).tolist() if "area" in tgt
                 else _areas(regions, iou_type))
        for region, label, c, area in zip(regions, labels, crowd, areas):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label,
                                "iscrowd": int(c != 0), "area": area, key: region})
        categories.update(labels)
        images.append({"id": image_id} if size is None else
                      {"id": image_id, "height": int(size[0]), "width": int(size[1])})

        regions, pred_size = _regions(pred, i, "predictions", iou_type)
        n = len(regions)
        if n and pred_size != size:
            raise ValueError(f"prediction masks of image {i} are {tuple(pred_size)}, "
                             f"target masks {tuple(size)}")
        scores = _column(pred, "scores", i, "predictions", n, np.float64).tolist()
        labels = _column(pred, "labels", i, "predictions", n, np.int64).tolist()
        detections += [{"image_id": image_id, "category_id": label, key: region, "score": score}
                       for region, label, score in zip(regions, labels, scores)]
        categories.update(labels)
    dataset = {"images": images, "annotations": annotations,
               "categories": [{"id": c, "name": str(c)} for c in sorted(categories)]}
    return dataset, detections


def _copy_coco(predictions: Sequence, targets: Mapping) -> tuple[dict, list]:
    """Shallow copies: the evaluator writes fields (ignore, area, id) into the annotation dicts."""
    dataset = dict(targets)
    dataset["annotations"] = [dict(a) for a in targets["annotations"]]
    if "categories" not in dataset:
        labels = sorted({a["category_id"] for a in dataset["annotations"]})
        dataset["categories"] = [{"id": c, "name": str(c)} for c in labels]
    return dataset, [dict(d) for d in predictions]


def _quiet(*args, **kwargs) -> None:
    pass


def coco_map(predictions, targets, iou_type: str = "bbox") -> dict[str, float]:
    """The 12 COCO detection statistics, computed by faster-coco-eval (equal to pycocotools').

    Two input forms:
    - per image (as torchmetrics): ``predictions`` a list of dicts {boxes (K, 4) xyxy,
      scores (K,), labels (K,)} and ``targets`` a list of dicts {boxes (G, 4) xyxy,
      labels (G,), optional iscrowd (G,), optional area (G,)}, one dict per image in the same
      order. Tensors, arrays or lists. A target's area defaults to its box area (to its mask
      area with iou_type="segm"); it only decides the small/medium/large bucket. With
      iou_type="segm", give ``masks`` (K, H, W) binary instead of ``boxes``.
    - COCO format: ``targets`` a ground-truth dataset dict (images, annotations, categories)
      as in instances_*.json, and ``predictions`` a list of detection dicts {image_id,
      category_id, bbox [x, y, w, h] (or segmentation RLE), score}. Neither is modified.

    Returns a dict with the keys of ``COCO_STATS``: map (AP@[.5:.95]), map_50, map_75,
    map_small/medium/large, mar_1/10/100 (AR with at most 1/10/100 detections per image),
    mar_small/medium/large; Python floats in [0, 1], or -1.0 where COCO cannot define the
    number (no ground truth in that bucket). Categories are the labels seen in either input.
    """
    if iou_type not in IOU_TYPES:
        raise UserError(f"unknown iou_type {iou_type!r}", hint=f"use one of {', '.join(IOU_TYPES)}")
    from faster_coco_eval import COCO, COCOeval_faster

    # The copies and the evaluator's index build allocate tens of thousands of small dicts and
    # lists, none of them cyclic garbage: pausing the cycle collector meanwhile saves the full
    # collections those allocations would trigger (measured: ~3 ms of ~40 on 500 images).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        if _is_coco_format(predictions, targets):
            dataset, detections = _copy_coco(predictions, targets)
        else:
            if len(targets) == 0:
                raise UserError("coco_map needs at least one image", hint="targets is an empty list")
            dataset, detections = _per_image_to_coco(predictions, targets, iou_type)
        return _evaluate(COCO, COCOeval_faster, dataset, detections, iou_type)
    finally:
        if gc_was_enabled:
            gc.enable()


def _evaluate(COCO, COCOeval_faster, dataset: dict, detections: list, iou_type: str) -> dict[str, float]:
    """Run faster-coco-eval in memory, silently; the 12 statistics by name."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(dataset, print_function=_quiet)
        gt.print_function = _quiet
        dt = gt.loadRes(detections)
        dt.print_function = _quiet
        evaluator = COCOeval_faster(gt, dt, iouType=iou_type, print_function=_quiet)
        evaluator.print_function = _quiet  # the subclass reads its own attribute; set both
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(v) for name, v in zip(COCO_STATS, evaluator.stats)}


# ---------------------------------------------------------------------------- VOC AP

def voc_ap(recall, precision, use_07_metric: bool = False) -> float:
    """AP of one precision/recall curve, as the PASCAL VOC devkit computes it.

    recall and precision are the cumulative values over detections sorted by descending score.
    use_07_metric=False: the all-point interpolated area (VOC2010 and later): precision made
    monotone (running maximum from the right), summed over the steps of recall.
    use_07_metric=True: the VOC2007 11-point metric, the mean over t in {0, 0.1, ..., 1} of the
    maximum precision at recall >= t (0 where recall never reaches t).
    """
    rec = np.asarray(recall, dtype=np.float64).reshape(-1)
    prec = np.asarray(precision, dtype=np.float64).reshape(-1)
    if rec.shape != prec.shape:
        raise ValueError(f"recall has {rec.size} points, precision {prec.size}")
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):  # the devkit's thresholds, float rounding included
            reached = rec >= t
            ap += (np.max(prec[reached]) if reached.any() else 0.0) / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def voc_class_ap(predictions: Sequence, targets: Sequence, iou_threshold: float = 0.5,
                 use_07_metric: bool = False) -> dict[int, float]:
    """Per-class VOC AP from per-image dicts (the form ``coco_map`` accepts), as voc_eval.py does.

    predictions: list of {boxes (K, 4) xyxy, scores (K,), labels (K,)}; targets: list of
    {boxes (G, 4) xyxy, labels (G,), optional difficult (G,)}. Per class, detections over all
    images are taken in descending score (stable order for ties); each is a true positive when
    its best-overlapping ground truth of that class in its image has IoU > iou_threshold and was
    not matched before, ignored when that ground truth is difficult, and a false positive
    otherwise. Recall divides by the number of non-difficult ground truths. Returns
    {label: AP} for every label with at least one non-difficult ground truth (mean it for mAP).
    IoU uses continuous coordinates (``box_iou``), not the old devkit's "+1" pixel convention.
    """
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} prediction dicts for {len(targets)} target dicts")
    gts: dict[int, dict[int, tuple[Tensor, np.ndarray]]] = {}  # label -> image -> (boxes, difficult)
    dets: dict[int, list[tuple[np.ndarray, np.ndarray, Tensor]]] = {}  # label -> [(scores, image, boxes)]
    for i, (pred, tgt) in enumerate(zip(predictions, targets)):
        boxes = _box_rows(tgt, i, "targets")
        labels = _column(tgt, "labels", i, "targets", len(boxes), np.int64)
        difficult = _column(tgt, "difficult", i, "targets", len(boxes), bool, default=False)
        for c in np.unique(labels).tolist():
            sel = labels == c
            gts.setdefault(c, {})[i] = (boxes[torch.from_numpy(sel)], difficult[sel])
        boxes = _box_rows(pred, i, "predictions")
        scores = _column(pred, "scores", i, "predictions", len(boxes), np.float64)
        labels = _column(pred, "labels", i, "predictions", len(boxes), np.int64)
        for c in np.unique(labels).tolist():
            sel = labels == c
            image = np.full(int(sel.sum()), i)
            dets.setdefault(c, []).append((scores[sel], image, boxes[torch.from_numpy(sel)]))

    result = {}
    for c in sorted(gts):
        npos = int(sum((~d).sum() for _, d in gts[c].values()))
        if npos == 0:
            continue
        parts = dets.get(c, [])
        if not parts:
            result[c] = 0.0
            continue
        scores = np.concatenate([p[0] for p in parts])
        images = np.concatenate([p[1] for p in parts])
        boxes = torch.cat([p[2] for p in parts])
        order = np.argsort(-scores, kind="stable")
        matched = {img: np.zeros(len(d), bool) for img, (_, d) in gts[c].items()}
        tp = np.zeros(len(order))
        fp = np.zeros(len(order))
        for k, j in enumerate(order):
            img = int(images[j])
            if img not in gts[c]:
                fp[k] = 1
                continue
            gboxes, difficult = gts[c][img]
            ious = box_iou(boxes[j:j + 1], gboxes)[0]
            best = int(torch.argmax(ious))
            if float(ious[best]) > iou_threshold:
                if difficult[best]:
                    continue
                if not matched[img][best]:
                    tp[k] = 1
                    matched[img][best] = True
                else:
                    fp[k] = 1
            else:
                fp[k] = 1
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        rec = tp / npos
        prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        result[c] = voc_ap(rec, prec, use_07_metric)
    return result
