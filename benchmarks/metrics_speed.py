"""goodfit's metrics against the libraries users would otherwise call, on the same numbers.

- classification, 1e6 samples x 10 classes: goodfit vs scikit-learn vs torchmetrics
- COCO mAP, 500 images: goodfit.coco_map vs pycocotools vs faster-coco-eval called directly
- BLEU / chrF, 10k sentence pairs: goodfit vs sacrebleu vs torchmetrics

Each cell is the median of `--repeats` timed calls after one warm-up call, the libraries
called in rotating order each round; every library
gets the same inputs in its own natural form (labels, scores, COCO dicts, strings), and the
values are printed next to the times so that "same numbers" is checked, not assumed.
The ratio column is goodfit / fastest; goal: <= 1.10.

    python benchmarks/metrics_speed.py [--repeats 5] [--quick]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time

import numpy as np
import torch


def compare(title, candidates, repeats):
    """Time each (library, fn): one warm-up call each (its value is reported), then `repeats`
    rounds calling every library once per round in a rotating order, so that drift on a shared
    machine touches all of them alike. A candidate with a third element ("once") is timed in one call."""
    values, times = {}, {}

    def call(fn):
        """fn, or (setup, fn): setup() runs untimed and gives fn its arguments."""
        setup, run = fn if isinstance(fn, tuple) else (lambda: (), fn)
        args = setup()
        start = time.perf_counter()
        value = run(*args)
        return time.perf_counter() - start, value

    for lib, fn, *once in candidates:
        seconds, values[lib] = call(fn)
        times[lib] = [seconds] if once else []
    looped = [(lib, fn) for lib, fn, *once in candidates if not once]
    for r in range(repeats):
        for lib, fn in looped[r % len(looped):] + looped[:r % len(looped)]:
            times[lib].append(call(fn)[0])
    return report(title, [(lib, statistics.median(times[lib]), values[lib]) for lib, *_ in candidates])


def _scalar(v):
    if isinstance(v, torch.Tensor):
        return float(v)
    if isinstance(v, dict):
        return float(v.get("map", next(iter(v.values()))))
    return float(v)


def report(title, rows):
    """rows: [(library, seconds, value)]; goodfit first."""
    fastest = min(t for _, t, _ in rows)
    print(f"\n{title}")
    print("| library | median (ms) | value | × fastest |")
    print("|---|---|---|---|")
    for lib, t, v in rows:
        print(f"| {lib} | {t * 1e3:.1f} | {_scalar(v):.6f} | {t / fastest:.2f} |")
    return rows[0][1] / fastest


# ---------------------------------------------------------------- classification

def classification(n, repeats):
    import goodfit.metrics as gm
    import sklearn.metrics as skm
    import torchmetrics.functional.classification as tmf

    rng = np.random.default_rng(0)
    k = 10
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)).astype(np.float32)
    logits[np.arange(n), y] += 1.0
    pred = logits.argmax(1)
    yt, pt = torch.from_numpy(y), torch.from_numpy(pred)
    ratios = {}
    ratios["accuracy"] = compare(f"accuracy, {n:,} samples × {k} classes (predicted labels)", [
        ("goodfit", lambda: gm.accuracy(pt, yt)),
        ("scikit-learn", lambda: skm.accuracy_score(y, pred)),
        ("torchmetrics", lambda: tmf.multiclass_accuracy(pt, yt, num_classes=k, average="micro")),
    ], repeats)
    ratios["macro_f1"] = compare(f"macro F1, {n:,} samples × {k} classes", [
        ("goodfit", lambda: gm.macro_f1(pt, yt, num_classes=k)),
        ("scikit-learn", lambda: skm.f1_score(y, pred, average="macro")),
        ("torchmetrics", lambda: tmf.multiclass_f1_score(pt, yt, num_classes=k, average="macro")),
    ], repeats)
    return ratios


# ---------------------------------------------------------------- detection

def synthetic_coco(images, seed=0):
    rng = np.random.default_rng(seed)
    gt_images, anns, dets = [], [], []
    aid = 1
    for img in range(1, images + 1):
        gt_images.append({"id": img, "width": 640, "height": 480})
        for _ in range(rng.integers(1, 12)):
            w, h = rng.uniform(8, 200, 2)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            cat = int(rng.integers(1, 6))
            anns.append({"id": aid, "image_id": img, "category_id": cat, "bbox": [x, y, w, h], "area": w * h,
                         "iscrowd": 0})
            aid += 1
            if rng.random() < 0.85:  # a detection near the box, with jitter
                jx, jy, jw, jh = rng.normal(0, 0.08, 4) * [w, h, w, h]
                dets.append({"image_id": img, "category_id": cat, "bbox": [x + jx, y + jy, max(1, w + jw), max(1, h + jh)],
                             "score": float(rng.uniform(0.3, 1))})
        for _ in range(rng.integers(0, 5)):  # false positives
            w, h = rng.uniform(8, 120, 2)
            dets.append({"image_id": img, "category_id": int(rng.integers(1, 6)),
                         "bbox": [rng.uniform(0, 500), rng.uniform(0, 400), w, h], "score": float(rng.uniform(0, 0.6))})
    cats = [{"id": c, "name": str(c)} for c in range(1, 6)]
    return {"images": gt_images, "annotations": anns, "categories": cats}, dets


def _cocoeval(module_coco, module_eval, gt, dets):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = module_coco()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dets)
        ev = module_eval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


def detection(images, repeats):
    from faster_coco_eval import COCO as FCOCO
    from faster_coco_eval import COCOeval_faster
    from goodfit.metrics.detection import coco_map

    gt, dets = synthetic_coco(images)

    def fresh():
        # the evaluators write fields into the dicts they are given; each call gets a fresh copy,
        # as a freshly loaded file would be (goodfit copies internally, and that copy is timed)
        return {**gt, "annotations": [dict(a) for a in gt["annotations"]]}, [dict(d) for d in dets]

    rows = [("goodfit", lambda: coco_map(dets, gt)),
            ("faster-coco-eval", (fresh, lambda g, d: _cocoeval(FCOCO, COCOeval_faster, g, d)))]
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        rows.append(("pycocotools", (fresh, lambda g, d: _cocoeval(COCO, COCOeval, g, d))))
    except ImportError:
        print("(pycocotools not installed: skipped)")
    return {"coco_map": compare(f"COCO mAP@[.5:.95], {images} images, {len(dets):,} detections", rows, repeats)}


# ---------------------------------------------------------------- text

def sentences(n, seed=0):
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(2000)]
    refs, hyps = [], []
    for _ in range(n):
        ref = list(rng.choice(vocab, rng.integers(5, 30)))
        hyp = [w if rng.random() < 0.7 else str(rng.choice(vocab)) for w in ref]
        if rng.random() < 0.3:
            hyp = hyp[: max(1, len(hyp) - rng.integers(1, 4))]
        refs.append(" ".join(ref))
        hyps.append(" ".join(hyp))
    return hyps, refs


def text(n, repeats):
    import sacrebleu
    from goodfit.metrics.text import bleu, chrf

    hyps, refs = sentences(n)
    ratios = {}
    rows = [("goodfit", lambda: bleu(hyps, refs)),
            ("sacrebleu", lambda: sacrebleu.corpus_bleu(hyps, [refs]).score)]
    try:
        from torchmetrics.functional.text import bleu_score

        # torchmetrics tokenizes by whitespace only; on these whitespace-tokenized sentences it agrees with 13a
        rows.append(("torchmetrics", lambda: 100 * bleu_score(hyps, [[r] for r in refs])))
    except ImportError:
        print("(torchmetrics not installed: skipped)")
    ratios["bleu"] = compare(f"corpus BLEU, {n:,} sentence pairs", rows, repeats)
    rows = [("goodfit", lambda: chrf(hyps, refs)),
            ("sacrebleu", lambda: sacrebleu.corpus_chrf(hyps, [refs]).score)]
    try:
        from torchmetrics.functional.text import chrf_score

        # ~40x slower than sacrebleu here: one timed call, no warm-up (and its chrF differs: it is
        # torchmetrics' own re-implementation, not sacrebleu's)
        rows.append(("torchmetrics (1 call)", lambda: 100 * chrf_score(hyps, [[r] for r in refs]), "once"))
    except ImportError:
        pass
    ratios["chrf"] = compare(f"corpus chrF, {n:,} sentence pairs", rows, repeats)
    return ratios


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="smaller inputs, 2 repeats: a smoke run")
    args = p.parse_args()
    n_cls, n_img, n_txt = (100_000, 100, 1_000) if args.quick else (1_000_000, 500, 10_000)
    if args.quick:
        args.repeats = 2
    # one thread for every library: scikit-learn's and the evaluators' paths here are single-threaded,
    # and on a shared 2-core machine torch's extra threads only add contention noise
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, threads 1, median of {args.repeats} after a warm-up")
    ratios = {}
    for part in (lambda: classification(n_cls, args.repeats), lambda: detection(n_img, args.repeats),
                 lambda: text(n_txt, args.repeats)):
        ratios.update(part())
    print("\n| metric | goodfit / fastest |\n|---|---|")
    for name, r in ratios.items():
        print(f"| {name} | {r:.2f} |")
    slow = [n for n, r in ratios.items() if r > 1.10]
    if slow:
        print(f"\nmore than 10% slower than the fastest: {', '.join(slow)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
