"""Resume's side of the run directory: pick the newest checkpoint that verifies, restore it, never load garbage.

The chain is `last`, then `prev` (the generation before it). A checkpoint that fails its
checksums, or whose state.json does not describe a fit, is skipped with a warning and moved
aside as `last.corrupt`, so the next write rotates a good checkpoint into `prev`. A run
killed before its first checkpoint restarts from step 0 (same seed, same result); one whose
checkpoints all fail is refused. A run directory is data: links inside it are refused, since
resume writes there.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from goodfit.engine.checkpoint import CorruptCheckpoint, load_checkpoint, read_checkpoint, set_rng_state
from goodfit.engine.loop import FitState
from goodfit.errors import UserError

CHAIN = ("last", "prev")
_SHAPE_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError, OverflowError)


def check_run_dir(run_dir: Path) -> None:
    """Refuse a run directory holding symbolic links: goodfit writes into it and must not write through one."""
    for root, dirs, files in os.walk(run_dir):
        for name in [*dirs, *files]:
            if os.path.islink(os.path.join(root, name)):
                raise UserError(f"{os.path.join(root, name)} is a symbolic link; refusing to use this run directory",
                                "a run directory holds plain files only; copy the real files in place of the link")


def read_test_record(path: Path) -> dict[str, Any]:
    """test.json as written by the test lock, or a UserError saying it is damaged."""
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"{path} is unreadable or not JSON ({e})",
                        "it records the locked test evaluation; restore it, or delete it to evaluate the test split again") from None
    if not (isinstance(doc, dict) and isinstance(doc.get("metrics"), dict) and isinstance(doc.get("evaluations"), list)):
        raise UserError(f"{path} is not a test record (metrics and evaluations expected)",
                        "restore it, or delete it to evaluate the test split again")
    return doc


def _number(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _check_state(saved: dict[str, Any], metrics: Path) -> None:
    """Types of what resume feeds the loop: a state.json with a valid checksum may still come from elsewhere."""
    fit = saved["fit"]
    counters = [fit["epoch"], fit["step"], fit["batch_in_epoch"]]
    if not all(type(c) is int and c >= 0 for c in counters):
        raise ValueError(f"fit counters must be non-negative integers, got {counters}")
    if not isinstance(fit["should_stop"], bool) or not isinstance(fit["history"], list):
        raise ValueError("fit.should_stop / fit.history have the wrong type")
    for h in fit["history"]:  # the loop's keys must be numbers; other callbacks may add their own
        if not (isinstance(h, dict) and
                all(_number(h.get(k)) and h.get(k) is not None for k in ("epoch", "train_loss", "lr", "train_time"))):
            raise ValueError("a fit.history entry is not an epoch summary")
    if len(fit["loss_carry"]) != 2 or not all(_number(v) for v in fit["loss_carry"]):
        raise ValueError("fit.loss_carry must be [sum, count]")
    es = saved.get("early_stopping")
    if es is not None and not (_number(es["best"]) and (es["best_epoch"] is None or type(es["best_epoch"]) is int)
                               and type(es["wait"]) is int and isinstance(es["improved"], bool)):
        raise ValueError("early_stopping state has the wrong types")
    offset = saved.get("metrics_offset")
    if offset is not None:
        if type(offset) is not int or offset < 0:
            raise ValueError(f"metrics_offset must be a byte offset, got {offset!r}")
        size = metrics.stat().st_size if metrics.exists() else 0
        if offset > size:
            raise ValueError(f"metrics.jsonl holds {size} bytes but the checkpoint was taken at byte {offset}")
    if not _number(saved.get("time")) or (saved.get("time") is not None and not math.isfinite(saved["time"])):
        raise ValueError("time must be a number of seconds")


def _best_weights(best: Path, best_epoch: int, resumed_epoch: int, device) -> dict | None:
    """The best epoch's weights for early stopping's restore_best, or None when `best` on disk is newer than
    the resume point (written after it: the replay writes it again)."""
    try:
        model_sd, _, state = read_checkpoint(best)
    except CorruptCheckpoint as e:
        raise UserError(f"{e.message}: it held the best model (epoch {best_epoch}), which resuming would not deliver",
                        f"to continue without it, set train.early_stopping.restore_best: false in "
                        f"{best.parent.parent / 'recipe.yaml'}; or train again") from None
    es = state.get("early_stopping")
    saved_epoch = es.get("best_epoch") if isinstance(es, dict) else None
    if saved_epoch == best_epoch:
        return {k: v.to(device) for k, v in model_sd.items()}
    if type(saved_epoch) is int and saved_epoch > max(best_epoch, resumed_epoch):
        return None
    raise UserError(f"checkpoint {best} holds the best model of epoch {saved_epoch}, but the checkpoint resumed "
                    f"from expects epoch {best_epoch}",
                    f"set train.early_stopping.restore_best: false in {best.parent.parent / 'recipe.yaml'} to "
                    "continue without it; or train again")


def _restore_from(folder: Path, trainer, early_stopping, run_dir: Path) -> tuple[FitState, dict[str, Any]]:
    saved = load_checkpoint(folder, trainer.model, trainer.optimizer)
    try:
        _check_state(saved, run_dir / "metrics.jsonl")
        state = FitState.from_json(saved["fit"])
        trainer.load_extra_state(saved)  # plateau and AutoClip; absent from older checkpoints: left fresh
        early_stopping.load_state_dict(saved.get("early_stopping") or
                                       {"best": None, "best_epoch": None, "wait": 0, "improved": False})
        set_rng_state(saved["rng"])
    except _SHAPE_ERRORS as e:
        raise CorruptCheckpoint(f"checkpoint {folder}: state.json does not describe a fit "
                                f"({type(e).__name__}: {e})") from None
    early_stopping.best_state = None
    if early_stopping.restore_best and early_stopping.best_epoch is not None:
        early_stopping.best_state = _best_weights(run_dir / "checkpoints" / "best", early_stopping.best_epoch,
                                                  state.epoch, trainer.device)
    return state, saved


def restore(run_dir: Path, trainer, early_stopping, warn: Callable[[str], None]) -> tuple[FitState | None, dict[str, Any]]:
    """Load the newest good checkpoint of `run_dir` into trainer and early stopping: (FitState, state.json).
    (None, {metrics_offset: 0}) when no checkpoint was ever completed: the fit starts from step 0."""
    folder = run_dir / "checkpoints"
    if not any((folder / name).exists() for name in (*CHAIN, "last.old")):
        warn("the run stopped before its first checkpoint; training it again from step 0")
        return None, {"metrics_offset": 0, "time": 0.0}
    problems = []
    for name in CHAIN:
        path = folder / name
        if not (path / "state.json").exists() and not (name == "last" and (folder / "last.old").exists()):
            if path.exists():
                problems.append(f"{name}: state.json missing")
            continue  # a swap cut short between its renames leaves no `last`; `prev` is then the newest
        try:
            state, saved = _restore_from(path, trainer, early_stopping, run_dir)
        except CorruptCheckpoint as e:
            problems.append(e.message)
            if name != CHAIN[-1]:
                warn(f"{e.message}; falling back to the checkpoint before it")
            continue
        if name != "last" and (folder / "last").exists():
            _quarantine(folder / "last")
        if problems:
            warn(f"resuming from checkpoints/{name} (step {state.step}, epoch {state.epoch}); "
                 "the steps after it are trained again")
        return state, saved
    raise CorruptCheckpoint(f"no good checkpoint remains in {folder}: " + "; ".join(problems),
                            "every checkpoint failed its checksums; the run must be trained again with `goodfit train`")


def _quarantine(path: Path) -> None:
    """Move a damaged checkpoint out of the chain (kept for inspection as <name>.corrupt)."""
    aside = path.with_name(path.name + ".corrupt")
    try:
        if aside.exists():
            shutil.rmtree(aside)
        path.rename(aside)
    except OSError:
        pass  # the next write fails on the same disk and says why
