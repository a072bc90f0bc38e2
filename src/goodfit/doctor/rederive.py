"""`goodfit doctor RUN_DIR`: the diagnosis re-derived from a run directory's files alone
(doctor.jsonl: the sampled measurements and step losses; metrics.jsonl: the curves)."""
from __future__ import annotations

import json
import math
from pathlib import Path

from goodfit.doctor.callback import DoctorCallback
from goodfit.doctor.findings import Diagnosis, Finding
from goodfit.doctor.monitor import Sample
from goodfit.doctor.rules import Context
from goodfit.errors import UserError


def _lines(path: Path) -> list[dict]:
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"{path}:{i} is not valid JSON", "the file is damaged; re-run training") from None
        if not isinstance(doc, dict):
            raise UserError(f"{path}:{i} is not a JSON object")
        out.append(doc)
    return out


def history_from_metrics(path: Path) -> list[dict]:
    """Epoch summaries (train_loss, val_<metric>) from metrics.jsonl's epoch and val eval events."""
    by_epoch: dict[int, dict] = {}
    for e in _lines(path):
        if e.get("kind") == "epoch" and e.get("split") == "train":
            by_epoch.setdefault(e["epoch"], {"epoch": e["epoch"]}).update(train_loss=e["loss"], step=e.get("step"))
        elif e.get("kind") == "eval" and e.get("split") == "val":
            row = by_epoch.setdefault(e["epoch"], {"epoch": e["epoch"]})
            row.update({f"val_{k}": v for k, v in e.items() if k not in ("kind", "epoch", "step", "split", "time")})
    return [by_epoch[k] for k in sorted(by_epoch) if "train_loss" in by_epoch[k]]


def diagnose_run(run_dir: str | Path) -> Diagnosis:
    """Re-derive the diagnosis of a finished (or stopped) run from its files."""
    run_dir = Path(run_dir)
    doctor_log, metrics = run_dir / "doctor.jsonl", run_dir / "metrics.jsonl"
    if not (run_dir / "recipe.yaml").is_file():
        raise UserError(f"{run_dir} is not a goodfit run directory (no recipe.yaml)")
    if not doctor_log.is_file():
        raise UserError(f"{run_dir} has no doctor.jsonl: the doctor did not watch this run",
                        "train with doctor.enabled=true (the default)")
    events = _lines(doctor_log)
    try:
        context = next((e for e in events if e.get("kind") == "context"), {})
        fields = Context.__dataclass_fields__
        ctx = Context(**{k: v for k, v in context.items() if k in fields})
        cb = DoctorCallback(ctx, preflight=[Finding.from_json(e) for e in events if e.get("kind") == "preflight"])
        for e in events:
            if e.get("kind") == "loss":
                cb.steps.append(int(e["step"]))
                cb.losses.append(float(e["loss"]))
            elif e.get("kind") == "sample":
                cb.samples.append(Sample.from_json(e))
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{doctor_log} is damaged ({type(err).__name__}: {err})",
                        "the run's other files are fine; re-run training to rebuild it") from None
    for f in cb.preflight:
        cb.first_seen.setdefault(f.id, (0, 0))
    try:
        history = history_from_metrics(metrics) if metrics.is_file() else []
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{metrics} is damaged ({type(err).__name__}: {err})") from None
    if any(not math.isfinite(v) for v in cb.losses) or any(not math.isfinite(h["train_loss"]) for h in history):
        bad = next((s for s, v in zip(cb.steps, cb.losses) if not math.isfinite(v)), None)

        class _State:  # what _record_divergence reads
            epoch, step = (len(history), bad)
        cb._record_divergence(_State)
    saved_doc = {}
    if (run_dir / "diagnosis.json").is_file():
        try:
            saved_doc = json.loads((run_dir / "diagnosis.json").read_text())
        except json.JSONDecodeError:
            saved_doc = {}
    repairs = saved_doc.get("repairs", []) if isinstance(saved_doc, dict) else []
    if repairs:  # as in flight: after a repair, the run is judged on the evidence since the repair
        cb.repairs = list(repairs)
        last = max(int(r.get("step", 0)) for r in repairs)
        cb._since = next((i for i, s in enumerate(cb.samples) if s.step > last), len(cb.samples))
        cb._since_step = last
    best = None
    if ctx.restore_best and history and "val_loss" in history[0]:
        finite = [i for i, h in enumerate(history) if math.isfinite(h["val_loss"])]
        best = 1 + min(finite, key=lambda i: history[i]["val_loss"]) if finite else None
    return cb.diagnose(history, best)
