"""Run one case and reduce it to what the scoring needs: the doctor's findings (id, severity,
step), the budget in optimizer steps, the validation accuracy per epoch and the time taken."""
from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import numpy as np

import goodfit
from goodfit.doctor import Diagnosis
from goodfit.errors import TrainingFailed

from doctor_suite.cases import LOOP_EPOCHS, Case
from doctor_suite.loops import train_loop

DUPLICATED = 0.2  # share of the samples written twice into the leaky data file


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def duplicates_file(dataset: str, seed: int, folder: Path) -> Path:
    """The dataset (all of it, MNIST-1D's test part included) with DUPLICATED of its rows repeated:
    a random split puts many of the copies on the other side of the train/val/test boundary."""
    from goodfit.data.builtin import BUILTINS

    path = folder / f"{dataset}-duplicates-s{seed}.npz"
    if path.exists():
        return path
    raw = BUILTINS[dataset]()
    x, y = raw.x, np.asarray(raw.y)
    if raw.test is not None:
        x, y = np.concatenate([x, raw.test[0]]), np.concatenate([y, raw.test[1]])
    rows = np.random.default_rng(seed).choice(len(x), int(DUPLICATED * len(x)), replace=False)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=np.concatenate([x, x[rows]]).astype(np.float32), y=np.concatenate([y, y[rows]]).astype(np.int64),
             num_classes=np.int64(10))
    return path


def as_sets(overrides: dict) -> list[str]:
    """{key: value} -> the `--set key=value` strings goodfit.run takes (None -> null: YAML reads the text)."""
    return [f"{k}={'null' if v is None else v}" for k, v in overrides.items()]


def _findings(diagnosis: Diagnosis, steps_per_epoch: int) -> list[dict]:
    out = []
    for f in diagnosis.findings:
        step = f.step
        if step is None and f.epoch is not None:  # curve findings are dated by epoch
            step = f.epoch * steps_per_epoch
        out.append({"id": f.id, "severity": f.severity, "step": step, "epoch": f.epoch})
    return out


def _history_from_files(run_dir: Path) -> list[dict]:
    rows: dict[int, dict] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e.get("kind") == "eval" and e.get("split") == "val":
            rows.setdefault(e["epoch"], {"epoch": e["epoch"]}).update(val_accuracy=e.get("accuracy"),
                                                                     val_loss=e.get("loss"))
    return [rows[k] for k in sorted(rows)]


def run_case(case: Case, workdir: Path, extra: dict | None = None, tag: str = "") -> dict:
    """Train the case (with `extra` overrides on top, e.g. auto-repair) and summarize it."""
    result = {"name": case.name + tag, "key": case.key, "label": case.label, "dataset": case.dataset,
              "seed": case.seed, "how": case.how}
    start, cpu = time.perf_counter(), time.process_time()
    if case.loop is not None:
        out = train_loop(case.dataset, case.seed, case.loop, LOOP_EPOCHS[case.dataset])
        diagnosis, spe = out["diagnosis"], out["steps_per_epoch"]
        result.update(budget=out["budget"], steps_per_epoch=spe, history=out["history"], failed=False, run_dir=None)
    else:
        overrides = {**case.all_overrides(), **(extra or {})}
        if case.data == "duplicates":
            overrides["data.source"] = str(duplicates_file(case.dataset, case.seed, workdir / "data"))
        out_dir = workdir / "runs" / _slug(case.name + tag)
        try:
            run = goodfit.run(case.recipe, as_sets(overrides), out=out_dir, progress=False)
            run_dir, history, failed = run.dir, [dict(h) for h in run.history], False
        except TrainingFailed:
            run_dir = next(p for p in out_dir.glob("*/*") if (p / "diagnosis.json").is_file())
            history, failed = _history_from_files(run_dir), True
        diagnosis = Diagnosis.from_json(json.loads((run_dir / "diagnosis.json").read_text()))
        context = json.loads((run_dir / "doctor.jsonl").read_text().splitlines()[0])
        spe = context["steps_per_epoch"]
        epochs = int(overrides.get("train.epochs", 0)) or goodfit.load_recipe(run_dir / "recipe.yaml").train.epochs
        result.update(budget=epochs * spe, steps_per_epoch=spe, history=history, failed=failed, run_dir=str(run_dir))
    result.update(seconds=time.perf_counter() - start, cpu_seconds=time.process_time() - cpu, verdict=diagnosis.verdict,
                  findings=_findings(diagnosis, result["steps_per_epoch"]), repairs=diagnosis.repairs)
    return result


def rederive(result: dict) -> dict:
    """The result's findings re-derived from its run directory's files by the current rules (no training);
    hand-written loops are not saved and keep their findings."""
    if not result.get("run_dir"):
        return result
    from goodfit.doctor.rederive import diagnose_run

    diagnosis = diagnose_run(result["run_dir"])
    findings = _findings(diagnosis, result["steps_per_epoch"])
    # the files give the end-of-run diagnosis; when the live run first saw a finding is only in its result
    seen = {f["id"]: f["step"] for f in result["findings"] if f["step"] is not None}
    for f in findings:
        if f["id"] in seen and f["step"] is not None:
            f["step"] = min(f["step"], seen[f["id"]])
    return {**result, "verdict": diagnosis.verdict, "findings": findings}


def best_accuracy(result: dict) -> float:
    """The delivered model's validation accuracy: the best epoch's (runs restore their best weights)."""
    values = [h.get("val_accuracy") for h in result.get("history", [])]
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return max(values) if values else 0.0
