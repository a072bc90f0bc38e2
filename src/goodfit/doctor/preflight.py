"""Pre-flight: what can be known before step 0, from the data and the model alone."""
from __future__ import annotations

from torch import nn

from goodfit.doctor.findings import Finding
from goodfit.doctor.rules import THRESHOLDS

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def small_batch_batchnorm(model: nn.Module, batch_size: int, world_size: int = 1) -> Finding | None:
    """BatchNorm estimating its statistics from fewer than 8 samples per process (Wu & He 2018: BN's
    error grows fast below that; group norm does not care)."""
    per_process = batch_size // max(1, world_size)
    n_bn = sum(isinstance(m, _BATCHNORMS) for m in model.modules())
    limit = int(THRESHOLDS["min_batch_batchnorm"])
    if not n_bn or per_process >= limit:
        return None
    return Finding("small_batch_batchnorm", "warning", epoch=0, step=0,
                   evidence={"batch_per_process": per_process, "batchnorm_layers": n_bn},
                   thresholds={"batch_per_process": f"< {limit}"},
                   message=f"{n_bn} BatchNorm layers see only {per_process} samples per batch: their statistics are "
                           "too noisy. Use group or layer norm, or a larger batch.",
                   prescription=[{"action": "use group normalization", "recipe_patch": {"model.norm": "group"}},
                                 {"action": "a larger batch", "recipe_patch": {"train.batch_size": 32}}])


def data_findings(data, task: str) -> list[Finding]:
    """unnormalized_inputs, class_imbalance, split_leakage, label_noise from the splits (goodfit.data.quality).

    The inputs are checked as the model sees them (after `data.normalize`). Leakage compares the test
    split's features with train and val, but never its labels or any model output: the test lock is about
    scoring, and a leak is exactly what it cannot detect by itself."""
    from goodfit.data import quality as q

    out: list[Finding] = []
    s = q.input_scale(data.x_train)
    if s.unnormalized:
        worst = [int(i) for i in s.worst[:5]]
        out.append(Finding(
            "unnormalized_inputs", "warning", epoch=0, step=0,
            evidence={"max_feature_rms": s.max_rms, "typical_feature_rms": s.typical_rms, "std_spread": s.spread,
                      "max_mean_in_stds": s.max_mean, "worst_features": worst},
            thresholds={"max_feature_rms": f"> {q.LARGE_INPUT:g}", "typical_feature_rms": f"< {q.SMALL_INPUT:g}"},
            message=f"The inputs are far from unit scale (feature RMS up to {s.max_rms:.3g}, typical {s.typical_rms:.3g}; "
                    f"stds spread {s.spread:.3g}x): gradients are dominated by the large features. Standardize them.",
            prescription=[{"action": "standardize features on the training split",
                           "recipe_patch": {"data.normalize": "standard"}}]))
    if task in ("classification", "binary") and data.num_classes:
        b = q.class_balance(data.y_train, data.num_classes)
        if b.imbalanced:
            out.append(Finding(
                "class_imbalance", "warning", epoch=0, step=0,
                evidence={"imbalance_ratio": b.ratio, "normalized_entropy": b.entropy, "minority_classes": b.minority,
                          "counts": [int(c) for c in b.counts]},
                thresholds={"imbalance_ratio": f">= {q.IMBALANCE_RATIO:g}"},
                message=f"The largest class has {b.ratio:.3g}x the samples of the smallest: accuracy will flatter the "
                        "model. Re-weight the loss or re-sample, and watch macro-F1.",
                prescription=[{"action": "weight the loss by inverse class frequency",
                               "recipe_patch": {"data.balance": "class_weights"}},
                              {"action": "re-sample the batches", "recipe_patch": {"data.balance": "sampler"}}]))
    if len(data.x_val) or len(data.x_test):
        leak = q.split_leakage(data.x_train, data.x_val, data.x_test)
        if leak.leaking:
            out.append(Finding(
                "split_leakage", "warning", epoch=0, step=0,
                evidence={"val_rows_leaked": leak.leaked.get("val", 0.0), "test_rows_leaked": leak.leaked.get("test", 0.0),
                          "exact_pairs": sum(len(v) for v in leak.exact.values()),
                          "near_pairs": sum(len(v) for v in leak.near.values())},
                thresholds={"rows_leaked": f"> {q.LEAK_FRACTION:g}"},
                message=f"{leak.leaked.get('val', 0):.1%} of validation and {leak.leaked.get('test', 0):.1%} of test rows "
                        "have an exact or near copy in the training split: their scores overstate generalization. "
                        "De-duplicate before splitting (or split by group).",
                prescription=[{"action": "remove duplicates before splitting"}]))
    if task == "classification" and data.num_classes and len(data.x_train) >= 5 * data.num_classes:
        li = q.label_issues(data.x_train, data.y_train, data.num_classes)
        if li.noisy:
            out.append(Finding(
                "label_noise", "warning", epoch=0, step=0,
                evidence={"estimated_noise_rate": li.noise_rate, "flagged_fraction": li.flagged_fraction,
                          "out_of_fold_accuracy": li.oof_accuracy, "flagged_rows": [int(i) for i in li.indices[:10]]},
                thresholds={"estimated_noise_rate": f">= {q.NOISE_RATE:g}"},
                message=f"About {li.noise_rate:.0%} of the training labels look wrong (confident learning on out-of-fold "
                        f"predictions flags {len(li.indices)} rows). Review the flagged rows, or use a noise-robust loss.",
                prescription=[{"action": "label smoothing", "recipe_patch": {"loss.label_smoothing": 0.1}}]))
    return out
