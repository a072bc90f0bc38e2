"""3.3 Detection and segmentation metrics: localization noise costs AP@[.5:.95] far more than AP50."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import torch

from goodfit.labs import Lab, LabContext

ANSWER = r"""
**Box IoU.** IoU(A, B) = |A ∩ B| / |A ∪ B|, with box area (x₂ − x₁)(y₂ − y₁) (COCO's continuous
coordinates). It is scale-free and unforgiving: a box shifted sideways by a fraction s of its width
has IoU = (1 − s)/(1 + s), so IoU ≥ 0.5 tolerates s ≤ 1/3 but IoU ≥ 0.95 only s ≤ 2.6 %.

**AP of one class at one IoU threshold t.** Sort all detections of the class by score. Walking down
the list, a detection is a true positive if it overlaps a not-yet-matched ground truth of that class
with IoU ≥ t, otherwise a false positive (a duplicate of a matched object is a false positive).
After k detections, precision p = TP/k and recall r = TP/#GT. AP is the area under the
*interpolated* curve p_interp(r) = max_{r' ≥ r} p(r'), which removes the saw-tooth.

- **PASCAL VOC** (t = 0.5, strictly IoU > 0.5): VOC2007 uses 11 points,
  AP = (1/11) Σ_{r ∈ {0, 0.1, …, 1}} p_interp(r); VOC2010+ uses all points,
  AP = Σ_k (r_{k+1} − r_k) · p_interp(r_{k+1}). mAP = mean over classes.
- **COCO** samples p_interp at 101 recall points and averages over 10 thresholds
  t ∈ {0.50, 0.55, …, 0.95} and over categories: **mAP = AP@[.5:.95]**, the headline number.
  **AP50** (≈ VOC mAP) and **AP75** are single thresholds; AP_S/M/L restrict to object area
  < 32², 32²–96², > 96² pixels. **AR@k** (mar_1/10/100) is the recall reached with at most k
  detections per image, averaged over the same 10 thresholds and the categories (≈ 2∫_{0.5}^{1}
  recall(t) dt): it ignores scores and false positives and measures how many objects are found,
  how precisely. "crowd" regions are ignored, and a number COCO cannot define is reported as −1.
- Why average over thresholds: AP50 only asks whether the object was found *roughly*; AP@[.5:.95]
  also rewards *how well* it was localized, so it separates detectors that AP50 ranks equal.

**Segmentation**, from the pixel confusion matrix (rows targets, columns predictions), per class c:
IoU_c = TP/(TP + FP + FN), Dice_c = 2TP/(2TP + FP + FN) = 2·IoU_c/(1 + IoU_c) (= F1 of the pixels);
**mIoU** is the mean IoU over the classes present, mean Dice likewise, and
**pixel accuracy** = Σ_c TP_c / #pixels, dominated by the largest class (usually background).
**Mask IoU** is IoU on mask pixels instead of box areas; COCO's "segm" mAP runs the same AP machinery
with it. A fixed boundary error of a few pixels costs a small object far more IoU than a large one,
which is why COCO reports AP_S separately.

goodfit's `coco_map` returns the 12 COCOeval numbers computed by faster-coco-eval (a C++ port of the
reference pycocotools COCOeval, with identical numbers); `voc_ap`/`voc_class_ap` follow the VOC
devkit. **The lab** builds a seeded synthetic detection set (3 categories, objects of all three COCO
sizes, 10 % missed objects, false positives), perturbs every predicted box by a jitter σ given as a
fraction of its own size (centre ± σ·w, σ·h; width and height × e^{σ·ε}), and tracks mAP, AP50,
AP75 and AR@100 as σ grows.
"""

JITTERS = [0.0, 0.02, 0.05, 0.08, 0.10, 0.15, 0.20, 0.30]
# Tolerances, set from 10 seeds of 80 and of 300 images: at σ = 0.08 AP50 lost 0.000–0.012 and
# mAP@[.5:.95] 0.40–0.45 (at σ = 0.10 AP50 already lost up to 0.049 on 80 images).
MODERATE = 0.08      # the jitter at which the claim is checked: 8 % of the box size
MAX_DROP_50 = 0.03   # AP50 may lose at most this much at MODERATE ...
MIN_DROP_MAP = 0.30  # ... while mAP@[.5:.95] must lose at least this much ...
RATIO = 10.0         # ... and at least RATIO times AP50's drop
W, H = 640, 480
CATEGORIES = (1, 2, 3)


def make_set(seed: int, n_images: int):
    """Ground truth per image and the random draws that turn it into predictions (common to every jitter)."""
    rng = np.random.default_rng([33, seed])
    targets, draws = [], []
    for _ in range(n_images):
        k = int(rng.integers(1, 7))
        side = np.exp(rng.uniform(np.log(10), np.log(300), k))   # sqrt(area) 10..300 px: small, medium and large
        aspect = np.exp(rng.uniform(-0.5, 0.5, k))
        w, h = np.minimum(side * np.sqrt(aspect), W - 1), np.minimum(side / np.sqrt(aspect), H - 1)
        x1, y1 = rng.uniform(0, W - w), rng.uniform(0, H - h)
        targets.append({"boxes": np.stack([x1, y1, x1 + w, y1 + h], 1), "labels": rng.integers(1, 4, k)})
        n_fp = int(rng.integers(0, 3))
        fw, fh = 40 + 200 * rng.random(n_fp), 40 + 200 * rng.random(n_fp)
        fx, fy = rng.random(n_fp) * (W - fw), rng.random(n_fp) * (H - fh)
        draws.append({"found": rng.random(k) > 0.1, "noise": rng.standard_normal((k, 4)),
                      "score": rng.uniform(0.3, 1.0, k), "fp_boxes": np.stack([fx, fy, fx + fw, fy + fh], 1),
                      "fp_score": rng.uniform(0.0, 0.7, n_fp), "fp_labels": rng.integers(1, 4, n_fp)})
    return targets, draws


def jittered(box: np.ndarray, noise: np.ndarray, sigma: float) -> np.ndarray:
    """Boxes moved by sigma·(w, h)·ε and rescaled by exp(sigma·ε): noise relative to each box's size."""
    w, h = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    cx = (box[:, 0] + box[:, 2]) / 2 + sigma * w * noise[:, 0]
    cy = (box[:, 1] + box[:, 3]) / 2 + sigma * h * noise[:, 1]
    nw, nh = w * np.exp(sigma * noise[:, 2]), h * np.exp(sigma * noise[:, 3])
    return np.stack([cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2], 1)


def predictions(targets, draws, sigma: float):
    out = []
    for t, d in zip(targets, draws):
        found = d["found"]
        boxes = jittered(t["boxes"], d["noise"], sigma)[found]
        out.append({"boxes": np.concatenate([boxes, d["fp_boxes"]]),
                    "scores": np.concatenate([d["score"][found], d["fp_score"]]),
                    "labels": np.concatenate([t["labels"][found], d["fp_labels"]])})
    return out


def matched_ious(targets, draws, sigma: float) -> np.ndarray:
    """IoU of every jittered box with the ground truth it came from."""
    from goodfit.metrics.detection import box_iou

    return np.concatenate([torch.diagonal(box_iou(jittered(t["boxes"], d["noise"], sigma), t["boxes"])).numpy()
                           for t, d in zip(targets, draws)])


def as_coco(targets, preds):
    """The same set in COCO json form, written here independently of goodfit's converter."""
    images, anns, dets = [], [], []
    for i, (t, p) in enumerate(zip(targets, preds), start=1):
        images.append({"id": i, "width": W, "height": H})
        for b, c in zip(t["boxes"], t["labels"]):
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c), "iscrowd": 0,
                         "area": w * h, "bbox": [float(b[0]), float(b[1]), w, h]})
        for b, s, c in zip(p["boxes"], p["scores"], p["labels"]):
            dets.append({"image_id": i, "category_id": int(c), "score": float(s),
                         "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
    dataset = {"images": images, "annotations": anns,
               "categories": [{"id": c, "name": f"class{c}"} for c in CATEGORIES]}
    return dataset, dets


def reference_stats(targets, preds) -> tuple[np.ndarray, str]:
    """COCOeval.stats of the lab's own COCO json, from pycocotools (the reference) where installed.

    Without pycocotools (it is in goodfit's [test] extra), faster-coco-eval's COCOeval is called directly on
    the same json: a weaker check (same engine), but it still tests goodfit's conversion of per-image dicts.
    """
    dataset, dets = as_coco(targets, preds)
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
        name = "pycocotools COCOeval"
    except ImportError:
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
        name = "faster-coco-eval COCOeval called directly (pycocotools not installed)"
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats, dtype=np.float64), name


def _ap_by_hand(flags: list[int], npos: int) -> tuple[float, float]:
    """All-point and 11-point interpolated AP of a ranked TP/FP list, written out independently."""
    tp = np.cumsum(flags)
    prec = tp / np.arange(1, len(flags) + 1)
    rec = tp / npos
    interp = [prec[k:].max() for k in range(len(flags))]          # p_interp at each rank
    all_point = sum(interp[k] for k, f in enumerate(flags) if f) / npos  # each TP adds a recall step of 1/npos
    eleven = np.mean([max((p for p, r in zip(prec, rec) if r >= t - 1e-12), default=0.0)
                      for t in np.linspace(0, 1, 11)])
    return float(all_point), float(eleven)


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt

    from goodfit.metrics.detection import COCO_STATS, box_iou, coco_map, voc_ap, voc_class_ap

    # -------------------------------------------------------------- box IoU: worked example and the shift law
    a, b = [[0.0, 0.0, 10.0, 10.0]], [[5.0, 0.0, 15.0, 10.0]]
    iou_ab = float(box_iou(a, b)[0, 0])
    ctx.measure("IoU of [0,0,10,10] and [5,0,15,10] (inter 50 / union 150)", iou_ab)
    ctx.check(abs(iou_ab - 1 / 3) < 1e-12 and abs(float(box_iou([[0, 0, 10, 10]], [[5, 0, 10, 10]], "xywh")[0, 0])
                                                   - 1 / 3) < 1e-12,
              "box_iou gives 1/3 for the worked example, in xyxy and in xywh form")
    shifts = np.linspace(0, 0.9, 19)
    box = np.array([[100.0, 100.0, 180.0, 140.0]])
    law = [float(box_iou(box, box + np.array([[s * 80, 0, s * 80, 0]]))[0, 0]) for s in shifts]
    law_err = max(abs(v - (1 - s) / (1 + s)) for v, s in zip(law, shifts))
    ctx.check(law_err < 1e-12, "a box shifted by a fraction s of its width has IoU (1 − s)/(1 + s)",
              f"max error {law_err:.1e}")
    ctx.table("largest sideways shift (fraction of the box width) that still passes each IoU threshold",
              ["IoU threshold t", "max shift s = (1 − t)/(1 + t)"],
              [[t, (1 - t) / (1 + t)] for t in (0.5, 0.75, 0.9, 0.95)])

    # -------------------------------------------------------------- COCO AP vs localization noise
    seeds = [0] if ctx.quick else [0, 1, 2]
    n_images = 80 if ctx.quick else 300
    keys = ["map", "map_50", "map_75", "mar_100"]
    curves = {k: np.zeros((len(seeds), len(JITTERS))) for k in keys}
    voc = np.zeros((len(seeds), len(JITTERS)))
    ref_diff, ref_checked = 0.0, 0
    first = None
    for si, seed in enumerate(seeds):
        targets, draws = make_set(seed, n_images)
        if first is None:
            first = (targets, draws)
        for ji, sigma in enumerate(JITTERS):
            preds = predictions(targets, draws, sigma)
            stats = coco_map(preds, targets)
            for k in keys:
                curves[k][si, ji] = stats[k]
            voc[si, ji] = np.mean(list(voc_class_ap(preds, targets, 0.5).values()))
            if si == 0:
                if sigma == 0.0:
                    clean_stats = stats
                if sigma == MODERATE:
                    moderate_stats = stats
                ref, ref_name = reference_stats(targets, preds)
                ref_diff = max(ref_diff, float(np.abs(np.array([stats[k] for k in COCO_STATS]) - ref).max()))
                ref_checked += 1
    n_gt = sum(len(t["labels"]) for t in first[0])
    ctx.log(f"{len(seeds)} seed(s) × {n_images} images of {W}×{H}, {n_gt} ground-truth boxes in seed 0, "
            f"3 categories; 10 % of objects missed, 0–2 false positives per image")
    mean = {k: v.mean(0) for k, v in curves.items()}
    ctx.table("COCO numbers vs jitter σ (fraction of box size), mean over seeds",
              ["σ", "mAP@[.5:.95]", "AP50", "AP75", "AR@100", "VOC mAP (all-point, IoU > .5)",
               "median IoU of a jittered box"],
              [[s, mean["map"][j], mean["map_50"][j], mean["map_75"][j], mean["mar_100"][j], voc.mean(0)[j],
                float(np.median(matched_ious(*first, s)))] for j, s in enumerate(JITTERS)])
    ctx.table(f"all 12 COCO statistics (seed 0), clean boxes vs σ = {MODERATE}",
              ["statistic", "σ = 0", f"σ = {MODERATE}"],
              [[k, clean_stats[k], moderate_stats[k]] for k in COCO_STATS])

    jm = JITTERS.index(MODERATE)
    drop_map = float(mean["map"][0] - mean["map"][jm])
    drop_50 = float(mean["map_50"][0] - mean["map_50"][jm])
    ctx.measure("mAP@[.5:.95] with exact boxes", float(mean["map"][0]))
    ctx.measure("AP50 with exact boxes", float(mean["map_50"][0]))
    ctx.measure(f"drop of mAP@[.5:.95] at σ = {MODERATE}", drop_map)
    ctx.measure(f"drop of AP50 at σ = {MODERATE}", drop_50)
    ctx.measure("drop ratio mAP / AP50", drop_map / drop_50 if drop_50 > 0 else float("inf"))
    ctx.check(drop_50 <= MAX_DROP_50, f"at σ = {MODERATE}, AP50 stays high: it drops by ≤ {MAX_DROP_50}",
              f"{drop_50:.4f}")
    ctx.check(drop_map >= MIN_DROP_MAP, f"at σ = {MODERATE}, mAP@[.5:.95] drops by ≥ {MIN_DROP_MAP}",
              f"{drop_map:.4f}")
    ctx.check(drop_map > RATIO * drop_50, f"… and by more than {RATIO:g}× AP50's drop",
              f"{drop_map:.4f} vs {RATIO:g}×{drop_50:.4f}")
    ctx.check(bool(np.all(mean["map"][1:] < mean["map_50"][1:])) and bool(np.all(np.diff(mean["map"]) < 0)),
              "for every σ > 0 mAP@[.5:.95] is below AP50, and it falls at every step of σ")
    voc_gap = float(np.abs(voc.mean(0) - mean["map_50"]).max())
    ctx.check(voc_gap < 0.03, "VOC all-point mAP at IoU 0.5 ≈ COCO AP50 (within 0.03: 101-point vs all-point "
              "interpolation, IoU > .5 vs ≥ .5, matching order)", f"max |diff| {voc_gap:.4f}")
    ctx.measure(f"max |coco_map − {ref_name}| over the 12 stats and every σ (seed 0)", ref_diff)
    ctx.check(ref_diff < 1e-9, f"coco_map equals {ref_name} on all 12 statistics at {ref_checked} jitter levels "
              "(|diff| < 1e-9; the lab writes its own COCO json for the reference)", f"{ref_diff:.1e}")

    # -------------------------------------------------------------- VOC AP on a hand-made ranking
    flags, npos = [1, 1, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0], 6   # 5 of 6 objects found, 12 detections
    tp = np.cumsum(flags)
    rec, prec = tp / npos, tp / np.arange(1, len(flags) + 1)
    hand_all, hand_11 = _ap_by_hand(flags, npos)
    dev_all, dev_11 = voc_ap(rec, prec), voc_ap(rec, prec, use_07_metric=True)
    ctx.table(f"VOC AP of the ranking {''.join('T' if f else 'F' for f in flags)} with {npos} objects",
              ["method", "voc_ap", "by hand"], [["all-point (VOC2010+)", dev_all, hand_all],
                                               ["11-point (VOC2007)", dev_11, hand_11]])
    ctx.check(abs(dev_all - hand_all) < 1e-12 and abs(dev_11 - hand_11) < 1e-12,
              "voc_ap equals the interpolated-AP formulas written out by hand (all-point and 11-point)")

    # -------------------------------------------------------------- segmentation metrics on a worked example
    seg = _segmentation_example(ctx, box_iou)

    # -------------------------------------------------------------- figures
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"map": ("mAP@[.5:.95]", "tab:red"), "map_50": ("AP50", "tab:blue"), "map_75": ("AP75", "tab:purple"),
              "mar_100": ("AR@100", "tab:green")}
    for k, (label, color) in styles.items():
        ax1.plot(JITTERS, mean[k], "o-", color=color, label=label)
        if len(seeds) > 1:
            ax1.fill_between(JITTERS, curves[k].min(0), curves[k].max(0), color=color, alpha=0.15)
    ax1.plot(JITTERS, voc.mean(0), "k:", label="VOC mAP (IoU > .5)")
    ax1.axvline(MODERATE, color="grey", lw=0.8, ls="--")
    ax1.set_xlabel("box jitter σ (fraction of box size)")
    ax1.set_ylabel("score")
    ax1.set_title("localization noise: mAP@[.5:.95] falls first")
    ax1.legend(fontsize=8)
    bins = np.linspace(0, 1, 51)
    for s, color in ((0.02, "tab:green"), (0.05, "tab:olive"), (MODERATE, "tab:orange"), (0.20, "tab:red")):
        ax2.hist(matched_ious(*first, s), bins=bins, alpha=0.5, color=color, label=f"σ = {s}")
    for t in np.arange(0.5, 0.96, 0.05):
        ax2.axvline(t, color="k", lw=0.5 if t > 0.51 else 1.2, ls=":" if t > 0.51 else "--")
    ax2.set_xlabel("IoU of a jittered box with its object (dotted: COCO thresholds .50….95)")
    ax2.set_ylabel("boxes")
    ax2.set_title("most jittered boxes pass IoU .5, few pass .9")
    ax2.legend(fontsize=8)
    ctx.figure(fig, "ap_vs_jitter")

    target, pred = seg
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
    for ax, img, title in ((axes[0], target, "target"), (axes[1], pred, "prediction"),
                           (axes[2], (target != pred).astype(int), "wrong pixels")):
        wrong = title == "wrong pixels"
        ax.imshow(img, cmap="gray_r" if wrong else "viridis", vmin=0, vmax=1 if wrong else 2, interpolation="nearest")
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    ctx.figure(fig, "segmentation_example")


def _pixel_scores(target: np.ndarray, pred: np.ndarray, k: int):
    """Confusion matrix, per-class IoU and Dice, and pixel accuracy, straight from the definitions."""
    cm = np.bincount(target.reshape(-1) * k + pred.reshape(-1), minlength=k * k).reshape(k, k)
    tp = np.diag(cm).astype(float)
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    return cm, tp / (tp + fp + fn), 2 * tp / (2 * tp + fp + fn), float(tp.sum() / cm.sum())


def _segmentation_example(ctx: LabContext, box_iou):
    """Per-class IoU, Dice, mIoU and pixel accuracy of a 3-class map whose objects are shifted by 4 pixels."""
    size, shift = 128, 4
    square = (40, 30, 80, 70)                                   # class 1: a 40×40 square, (y1, x1, y2, x2)
    target = np.zeros((size, size), dtype=np.int64)
    target[square[0]:square[2], square[1]:square[3]] = 1
    yy, xx = np.mgrid[:size, :size]
    disc = lambda cy, cx: (yy - cy) ** 2 + (xx - cx) ** 2 <= 7 ** 2  # noqa: E731 - class 2: a small disc, r = 7
    target[disc(30, 100)] = 2
    pred = np.zeros_like(target)                                # every object predicted 4 px down and right
    pred[square[0] + shift:square[2] + shift, square[1] + shift:square[3] + shift] = 1
    pred[disc(30 + shift, 100 + shift)] = 2

    k = 3
    cm, iou, dice, pixel_acc = _pixel_scores(target, pred, k)
    ctx.table("segmentation worked example (128×128, objects predicted 4 px off): per class",
              ["class", "pixels", "IoU = TP/(TP+FP+FN)", "Dice = 2TP/(2TP+FP+FN)", "2·IoU/(1+IoU)"],
              [[name, int(cm[c].sum()), iou[c], dice[c], 2 * iou[c] / (1 + iou[c])]
               for c, name in enumerate(("background", "large square", "small disc"))])
    ctx.measure("segmentation: pixel accuracy", float(pixel_acc))
    ctx.measure("segmentation: mIoU", float(iou.mean()))
    ctx.measure("segmentation: mean Dice", float(dice.mean()))
    ctx.check(np.allclose(dice, 2 * iou / (1 + iou), rtol=0, atol=1e-12), "Dice = 2·IoU/(1 + IoU) for every class")
    ctx.check(iou[2] < iou[1] - 0.2, "the same 4-pixel offset costs the small object far more IoU than the large one "
              "(by > 0.2)", f"{iou[2]:.3f} vs {iou[1]:.3f}")
    # mask IoU of the two squares equals box IoU of the pixel-aligned boxes
    mask_iou = float(np.logical_and(target == 1, pred == 1).sum()
                     / np.logical_or(target == 1, pred == 1).sum())
    y1, x1, y2, x2 = square
    sq_iou = float(box_iou([[x1, y1, x2, y2]], [[x1 + shift, y1 + shift, x2 + shift, y2 + shift]])[0, 0])
    ctx.check(abs(mask_iou - sq_iou) < 1e-12 and abs(iou[1] - sq_iou) < 1e-12,
              "mask IoU of the square (pixel count) equals box_iou of its pixel-aligned boxes",
              f"{mask_iou:.6f} vs {sq_iou:.6f}")
    # all-background prediction: pixel accuracy looks good, mIoU does not
    _, bg_iou, _, bg_acc = _pixel_scores(target, np.zeros_like(target), k)
    bg_miou = float(bg_iou.mean())
    ctx.measure("all-background prediction: pixel accuracy", bg_acc)
    ctx.measure("all-background prediction: mIoU", bg_miou)
    ctx.check(bg_acc > 0.85 and bg_miou < 0.4, "predicting only background keeps pixel accuracy high while mIoU "
              "collapses (pixel accuracy is dominated by the largest class)", f"{bg_acc:.3f} vs {bg_miou:.3f}")

    from goodfit.metrics import dice as gf_dice
    from goodfit.metrics import mean_iou as gf_mean_iou
    from goodfit.metrics import pixel_accuracy as gf_pixel_accuracy

    p, t = torch.as_tensor(pred)[None], torch.as_tensor(target)[None]
    ours = [float(pixel_acc), float(iou.mean()), float(dice.mean())]
    theirs = [gf_pixel_accuracy(p, t, num_classes=k), gf_mean_iou(p, t, num_classes=k), gf_dice(p, t, num_classes=k)]
    per_class = np.asarray(gf_dice(p, t, num_classes=k, per_class=True))
    gap = max(max(abs(a - b) for a, b in zip(ours, theirs)), float(np.abs(per_class - dice).max()))
    ctx.log("segmentation numbers above computed with numpy from the confusion matrix; cross-checked with "
            "goodfit.metrics.pixel_accuracy / mean_iou / dice")
    ctx.check(gap < 1e-9, "goodfit.metrics pixel_accuracy, mean_iou and dice (mean and per class) equal the numpy "
              "definitions", f"max |diff| {gap:.1e}")
    return target, pred


LAB = Lab(id="3.3", title="Detection and segmentation metrics (IoU, mAP, AR, mIoU, Dice)",
          question="检测 / 分割任务评估指标（mAP、IoU 等） — Detection and segmentation metrics: box IoU, COCO "
                   "mAP@[.5:.95], AP50, AP75, AR, VOC AP; mask IoU, mIoU, Dice, pixel accuracy.",
          answer=ANSWER, run=run, uses="metrics (goodfit.metrics.detection, segmentation)")
