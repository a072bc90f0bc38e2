"""load_data: recipe `data` section -> DataSplits, deterministic in (cfg, seed).

Order: read -> check -> encode targets -> split -> subset/imbalance -> impute -> normalize ->
label noise -> feature scale -> balance. Subset and imbalance come before the statistics because
they define the training set the model has: statistics from rows it does not have would leak.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from goodfit.data import balance, perturb
from goodfit.data.checks import check_finite, check_shapes
from goodfit.data.dataset import DataSplits
from goodfit.data.impute import impute
from goodfit.data.normalize import fit_normalizer, summarize
from goodfit.data.sources import read_source
from goodfit.data.split import split_indices
from goodfit.data.targets import TASKS, encode_targets
from goodfit.errors import UserError
from goodfit.recipe import Data

# one independent random stream per step, so turning a knob on never changes the split or another knob
_SPLIT, _SUBSET, _IMBALANCE, _LABEL_NOISE = range(4)
_PARTS = ("train", "val", "test")


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed % 2**64, stream])


def _check_knobs(cfg: Data, task: str) -> None:
    """Knobs that need class labels are refused for regression before any work is done."""
    if task not in TASKS:
        raise UserError(f"task '{task}' is not supported by goodfit's data sources yet",
                        "use task: classification, binary or regression")
    if task != "regression":
        return
    for key, on in [("perturb.label_noise", cfg.perturb.label_noise > 0), ("perturb.imbalance", cfg.perturb.imbalance is not None),
                    ("balance", cfg.balance != "none")]:
        if on:
            raise UserError(f"data.{key} needs class labels; task regression has none",
                            f"remove data.{key}, or use a classification task")


def load_data(cfg: Data, task: str, seed: int) -> DataSplits:
    """Read, check, split, normalize and perturb the data named by `cfg`; same cfg + seed -> same tensors."""
    _check_knobs(cfg, task)
    clock = [time.perf_counter()]
    timings: list[list] = []  # (stage, seconds): what lab 1.1.1 shows of the data stages

    def lap(stage: str) -> None:
        clock.append(time.perf_counter())
        timings.append([stage, clock[-1] - clock[-2]])

    raw = read_source(cfg.source, cfg.target)
    check_shapes(raw)
    missing = check_finite(raw, cfg.impute)
    t = encode_targets(raw, task)
    classes = task != "regression"
    info: dict = {"source": raw.source, "kind": raw.kind, "task": task, "canonical_test": raw.test is not None,
                  "notes": list(raw.notes), "perturb": {}}

    lap("load")

    # split: a canonical test part stays the test split, and val comes out of the train part
    stratify = classes and cfg.split.stratify
    labels = t.y if stratify else None
    if raw.test is not None:
        tr, va = split_indices(len(t.y), [1 - cfg.split.val, cfg.split.val], _rng(seed, _SPLIT), labels, t.class_names)
        xs, ys = [raw.x[tr], raw.x[va], raw.test[0]], [t.y[tr], t.y[va], t.y_test]
    else:
        fractions = [1 - cfg.split.val - cfg.split.test, cfg.split.val, cfg.split.test]
        idx = split_indices(len(t.y), fractions, _rng(seed, _SPLIT), labels, t.class_names)
        xs, ys = [raw.x[i] for i in idx], [t.y[i] for i in idx]
    info["stratified"] = stratify

    p = cfg.perturb
    if p.subset is not None:
        keep = perturb.subset(len(ys[0]), p.subset, _rng(seed, _SUBSET), ys[0] if classes else None)
        info["perturb"]["subset"] = {"kept": len(keep), "of": len(ys[0])}
        xs[0], ys[0] = xs[0][keep], ys[0][keep]
    if p.imbalance is not None:
        before = np.bincount(ys[0], minlength=t.num_classes)
        keep = perturb.imbalance(ys[0], t.num_classes, p.imbalance, _rng(seed, _IMBALANCE))
        xs[0], ys[0] = xs[0][keep], ys[0][keep]
        info["perturb"]["imbalance"] = {"ratio": p.imbalance, "class_counts_before": before.tolist(),
                                        "class_counts_after": np.bincount(ys[0], minlength=t.num_classes).tolist()}
    if len(ys[0]) == 0:
        raise UserError(f"the training split of {raw.source!r} is empty ({len(t.y)} samples in all)",
                        "lower data.split.val/test or use more data")

    if missing and cfg.impute != "none":
        xs = impute(xs, cfg.impute)
        info["impute"] = {"strategy": cfg.impute, "missing_cells": missing}

    lap("split and subset")
    stats = fit_normalizer(xs[0], cfg.normalize)
    if stats is not None:
        xs = [(x - stats[0]) / stats[1] for x in xs]
    info["normalize"] = summarize(stats, cfg.normalize, xs[0].ndim)
    lap("normalize (fit on train)")

    shift = scale = None
    if task == "regression":
        shift, scale = ys[0].mean(0), ys[0].std(0)
        scale = np.where(scale > 0, scale, 1.0)
        ys = [(y - shift) / scale for y in ys]

    if p.label_noise > 0:
        ys[0], rows = perturb.label_noise(ys[0], t.num_classes, p.label_noise, _rng(seed, _LABEL_NOISE))
        info["perturb"]["label_noise"] = {"p": p.label_noise, "flipped": len(rows), "rows": rows.tolist()}

    if p.feature_scale is not None:
        # applied to all three splits: it models raw inputs that arrive badly scaled, which a
        # deployed model would see too; scaling train alone would be a train/test shift instead
        factors = perturb.feature_factors(raw.x.shape[1:], p.feature_scale)
        xs = [x * factors for x in xs]
        info["perturb"]["feature_scale"] = {"s": p.feature_scale, "factor_range": [1.0, p.feature_scale],
                                            "splits": list(_PARTS)}

    weights = sample_weights = None
    if cfg.balance == "class_weights":
        weights = torch.from_numpy(balance.class_weights(ys[0], t.num_classes).astype(np.float32))
    elif cfg.balance == "sampler":
        sample_weights = torch.from_numpy(balance.sampler_weights(ys[0], t.num_classes).astype(np.float32))
    info["balance"] = cfg.balance

    lap("perturb and balance")
    info["sizes"] = {name: len(y) for name, y in zip(_PARTS, ys)}
    if classes:
        info["class_counts"] = {name: np.bincount(y, minlength=t.num_classes).tolist() for name, y in zip(_PARTS, ys)}
    x = [torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for v in xs]
    y = [torch.from_numpy(np.ascontiguousarray(_targets(v, task))) for v in ys]
    return DataSplits(
        x_train=x[0], y_train=y[0], x_val=x[1], y_val=y[1], x_test=x[2], y_test=y[2],
        task=task, input_shape=tuple(raw.x.shape[1:]), num_classes=t.num_classes,
        num_outputs={"classification": t.num_classes, "binary": 1}.get(task) or ys[0].shape[1],
        class_names=t.class_names, feature_names=raw.feature_names,
        target_shift=None if shift is None else torch.from_numpy(shift.astype(np.float32)),
        target_scale=None if scale is None else torch.from_numpy(scale.astype(np.float32)),
        class_weights=weights, info=info, sample_weights=sample_weights, timings=timings,
    )


def _targets(y: np.ndarray, task: str) -> np.ndarray:
    """int64 indices for classification, float32 0/1 for binary, float32 (N, D) for regression."""
    return y.astype(np.int64) if task == "classification" else y.astype(np.float32)
