"""Scoring: per-class precision and recall, macro F1, false alarms on healthy runs, detection time.

A fault case is detected when the doctor reports its expected id at warning or error severity.
Any other warning/error finding on it is a false positive of that id, unless it is a causal
consequence of the fault (ACCEPTABLE below: a run that diverged also had its LR too high; a
model that cannot train also underfits). On a healthy case every warning/error is a false alarm.
"""
from __future__ import annotations

import statistics

# expected label -> other findings it implies, and why (the README prints this table)
ACCEPTABLE: dict[str, dict[str, str]] = {
    "divergence": {"lr_too_high": "a loss that overflows came from steps too large",
                   "exploding_gradients": "the gradients grow on the way to the overflow",
                   "dead_units": "the huge steps before the overflow kill ReLUs"},
    "lr_too_high": {"dead_units": "oversized first steps push ReLU pre-activations negative for good",
                    "divergence": "too high an LR can end in an overflow",
                    "underfitting": "the wrecked model does not fit within the budget"},
    "lr_too_low": {"underfitting": "a model that barely moves does not fit"},
    "exploding_gradients": {"underfitting": "a net whose early layers get chaotic updates does not fit",
                            "divergence": "exploding gradients can end in an overflow",
                            "bad_initial_loss": "the init that makes the gradients explode makes the first logits "
                                                "large too (one cause: the init scale)"},
    "vanishing_gradients": {"underfitting": "early layers that do not learn leave the model unfitted"},
    "dead_units": {"underfitting": "a layer of dead units passes no signal"},
    "saturated_activations": {"vanishing_gradients": "a saturated tanh/sigmoid passes almost no gradient",
                              "underfitting": "a saturated net barely learns",
                              "bad_initial_loss": "the weights that saturate the hidden layers also make the first "
                                                  "logits large (one cause: the init scale)"},
    "bad_initial_loss": {"underfitting": "the run spends its budget recovering from the start",
                         "exploding_gradients": "the weights that make the logits huge make the gradients huge too"},
    "small_batch_batchnorm": {},
    "plateau": {"underfitting": "a loss that stays flat leaves the model unfitted"},
    "overfitting": {},
    "underfitting": {},
    "unnormalized_inputs": {"underfitting": "badly scaled inputs make the loss surface ill-conditioned: slow to fit",
                            "saturated_activations": "large inputs drive activations to their bounds",
                            "exploding_gradients": "the first layer's gradient scales with its input",
                            "bad_initial_loss": "large inputs make large first logits",
                            "lr_too_high": "large inputs make every step effectively larger",
                            "dead_units": "large inputs make large pre-activation swings"},
    "class_imbalance": {},
    "label_noise": {"underfitting": "wrong labels keep the training loss high",
                    "overfitting": "the model memorizes the wrong labels"},
    "split_leakage": {},
    "softmax_before_loss": {"underfitting": "probabilities as logits cap how far the loss can fall"},
    "missing_zero_grad": {"underfitting": "steps along stale gradients do not fit the data",
                          "exploding_gradients": "the summed gradient grows with every step",
                          "dead_units": "steps along the summed stale gradients overshoot and kill ReLUs",
                          "divergence": "the growing steps can overflow"},
    "parameters_not_training": {"underfitting": "a model with a frozen layer may not fit"},
}


def warned(result: dict) -> set[str]:
    return {f["id"] for f in result["findings"] if f["severity"] in ("warning", "error")}


def false_positives(result: dict) -> set[str]:
    """Warning/error findings that are neither the expected label nor implied by it."""
    label = result["label"]
    allowed = set(ACCEPTABLE.get(label, {})) | {label}
    return warned(result) - allowed


def detection_fraction(result: dict) -> float | None:
    """When the expected finding was first reported, as a fraction of the run's budget in steps."""
    steps = [f["step"] for f in result["findings"]
             if f["id"] == result["label"] and f["severity"] in ("warning", "error") and f["step"] is not None]
    return min(steps) / result["budget"] if steps and result["budget"] else None


def score(results: list[dict]) -> dict:
    """Per-class counts, precision, recall and F1; macro F1 over the fault classes; false-alarm rate."""
    classes = sorted({r["label"] for r in results if r["label"] != "healthy"})
    per: dict[str, dict] = {c: {"cases": 0, "tp": 0, "fp": 0} for c in classes}
    for r in results:
        if r["label"] != "healthy":
            per[r["label"]]["cases"] += 1
            per[r["label"]]["tp"] += r["label"] in warned(r)
        for fid in false_positives(r):
            per.setdefault(fid, {"cases": 0, "tp": 0, "fp": 0})["fp"] += 1
    for c, s in per.items():
        predicted = s["tp"] + s["fp"]
        s["precision"] = s["tp"] / predicted if predicted else (1.0 if not s["cases"] else 0.0)
        s["recall"] = s["tp"] / s["cases"] if s["cases"] else float("nan")
        p, rc = s["precision"], s["recall"]
        s["f1"] = 2 * p * rc / (p + rc) if s["cases"] and p + rc > 0 else 0.0
    healthy = [r for r in results if r["label"] == "healthy"]
    alarms = [r for r in healthy if warned(r)]
    fractions = [d for r in results if r["label"] != "healthy" for d in [detection_fraction(r)] if d is not None]
    return {
        "per_class": per,
        "macro_f1": statistics.fmean(per[c]["f1"] for c in classes) if classes else float("nan"),
        "healthy": len(healthy), "false_alarms": len(alarms),
        "false_alarm_rate": len(alarms) / len(healthy) if healthy else float("nan"),
        "alarm_cases": [(r["name"], sorted(warned(r))) for r in alarms],
        "median_detection": statistics.median(fractions) if fractions else float("nan"),
        "missed": [(r["name"], sorted(warned(r))) for r in results if r["label"] != "healthy" and r["label"] not in warned(r)],
        "confusions": [(r["name"], sorted(false_positives(r))) for r in results if r["label"] != "healthy" and false_positives(r)],
    }
