"""What the doctor reports (DESIGN §1.6): findings with evidence against thresholds, a
prescription as a recipe patch, and a verdict about the model the run delivers."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FINDING_IDS = ("overfitting", "underfitting", "good_fit", "lr_too_high", "lr_too_low", "divergence",
               "exploding_gradients", "vanishing_gradients", "dead_units", "saturated_activations",
               "bad_initial_loss", "unnormalized_inputs", "small_batch_batchnorm", "plateau", "class_imbalance",
               "label_noise", "split_leakage",
               # code faults, seen from any training loop through goodfit.Doctor (additions to DESIGN §1.6's list)
               "softmax_before_loss", "missing_zero_grad", "parameters_not_training")
SEVERITIES = ("info", "warning", "error")
VERDICTS = ("good_fit", "overfitting", "underfitting", "failed")


def _clean(v: Any) -> Any:
    """JSON-safe numbers: floats rounded to 6 significant digits, non-finite as strings."""
    if isinstance(v, float):
        return float(f"{v:.6g}") if math.isfinite(v) else str(v)
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


@dataclass
class Finding:
    """One diagnosis: what (id), how bad (severity), where (epoch, step, layer), why (evidence
    values against their thresholds), and the fix (prescription: actions with recipe patches)."""

    id: str
    severity: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, str] = field(default_factory=dict)  # evidence name -> the test it failed, e.g. "> 70"
    prescription: list[dict[str, Any]] = field(default_factory=list)
    epoch: int | None = None
    step: int | None = None
    layer: str | None = None

    def __post_init__(self):
        if self.id not in FINDING_IDS:
            raise ValueError(f"unknown finding id {self.id!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")

    def to_json(self) -> dict[str, Any]:
        doc = {"id": self.id, "severity": self.severity, "epoch": self.epoch, "step": self.step}
        if self.layer is not None:
            doc["layer"] = self.layer
        doc.update({"evidence": _clean(self.evidence), "thresholds": self.thresholds, "message": self.message,
                    "prescription": _clean(self.prescription)})
        return doc

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Finding":
        return cls(id=d["id"], severity=d["severity"], message=d.get("message", ""), evidence=d.get("evidence", {}),
                   thresholds=d.get("thresholds", {}), prescription=d.get("prescription", []),
                   epoch=d.get("epoch"), step=d.get("step"), layer=d.get("layer"))


@dataclass
class Diagnosis:
    verdict: str
    findings: list[Finding]
    repairs: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        doc = {"verdict": self.verdict, "findings": [f.to_json() for f in self.findings]}
        if self.repairs:
            doc["repairs"] = _clean(self.repairs)
        return doc

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2))
        tmp.replace(path)
        return path

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Diagnosis":
        return cls(verdict=d["verdict"], findings=[Finding.from_json(f) for f in d.get("findings", [])],
                   repairs=d.get("repairs", []))

    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity in ("warning", "error")]

    def recipe_patch(self) -> dict[str, Any]:
        """The first prescription of every warning/error finding, merged (earlier findings win)."""
        patch: dict[str, Any] = {}
        for f in self.warnings():
            for p in f.prescription[:1]:
                for k, v in p.get("recipe_patch", {}).items():
                    patch.setdefault(k, v)
        return patch


def verdict(findings: list[Finding]) -> str:
    """failed if any error; else overfitting / underfitting if such a warning; else good_fit.
    Warnings that explain an underfit (LR too low, dead units, vanishing gradients, a plateau...)
    make the verdict underfitting only together with the underfitting finding itself."""
    ids = {f.id for f in findings if f.severity != "info"}
    if any(f.severity == "error" for f in findings):
        return "failed"
    if "overfitting" in ids:
        return "overfitting"
    if "underfitting" in ids:
        return "underfitting"
    return "good_fit"
