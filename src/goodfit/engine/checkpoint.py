"""Checkpoints: safetensors for tensors, JSON for the rest, written atomically, verified on load.

A checkpoint is a folder: `model.safetensors`, `optimizer.safetensors`, `state.json`
(counters, RNG states, scheduler/callback state, optimizer hyperparameters, the sha256 of
each tensor file, and `self_sha256`: the sha256 of state.json's own bytes with that field
zeroed). It is written into a temporary sibling folder, fsynced, then swapped in by renames,
so a crash at any instant leaves a whole checkpoint. With `previous` (the run's `last`
keeps `prev`), the checkpoint it replaces becomes `previous` instead of being deleted: when
the newest one is damaged, resume falls back to it. Nothing is ever unpickled.
"""
from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import random
import shutil
import signal
import stat
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from goodfit.errors import UserError

FORMAT = 2  # 2: state.json carries its own checksum
TENSOR_FILES = ("model.safetensors", "optimizer.safetensors")
_SELF = b'{"self_sha256": "'  # state.json starts with its own checksum, 64 hex digits
_ZEROS = b"0" * 64


class CorruptCheckpoint(UserError):
    """A checkpoint whose files are missing, malformed or fail their checksum."""


class CheckpointWriteFailed(UserError):
    """The disk refused a checkpoint (full, read-only, no permission); the previous ones are intact."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_writes = 0  # checkpoint writes by this process: what GOODFIT_FAULT counts


def _fault(stage: str) -> None:
    """Test hook, inert unless GOODFIT_FAULT is set: `kill_in_checkpoint:N[:STAGE]` SIGKILLs this
    process inside its Nth checkpoint write, at STAGE: `partial` (model tensors in the temporary
    folder, nothing else), `written` (the temporary folder complete, before any rename; the
    default) or `swap` (the old checkpoint renamed aside, the new one not yet in place)."""
    spec = os.environ.get("GOODFIT_FAULT", "")
    if not spec.startswith("kill_in_checkpoint:"):
        return
    _, n, *rest = spec.split(":")
    if int(n) == _writes and (rest[0] if rest else "written") == stage:
        os.kill(os.getpid(), signal.SIGKILL)


def write_failed(folder: Path, e: OSError) -> CheckpointWriteFailed:
    reason = os.strerror(e.errno) if e.errno else str(e)
    name = errno.errorcode.get(e.errno, "") if e.errno else ""
    return CheckpointWriteFailed(
        f"cannot write checkpoint {folder}: {reason}{f' ({name})' if name else ''}; training stopped, "
        "the checkpoints written before are intact",
        "free disk space or make the run directory writable, then continue with `goodfit resume RUN_DIR`")


# ---------------------------------------------------------------- RNG state <-> JSON

def rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from: torch (CPU and CUDA), numpy's global, Python's."""
    np_state = np.random.get_state()
    state = {
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
        "numpy": [np_state[0], np_state[1].tolist(), *map(lambda v: v if not isinstance(v, np.generic) else v.item(), np_state[2:])],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [base64.b64encode(s.numpy().tobytes()).decode() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(state["torch"])), dtype=torch.uint8))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)
                                      for s in state["cuda"]])


# ---------------------------------------------------------------- optimizer <-> flat tensors + JSON

def _split_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for idx, pstate in sd["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for flat, value in [*tensors.items(), *meta["scalars"].items()]:
        idx, key = flat.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    # JSON turned tuples (Adam's betas) into lists; give them back their type
    groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
              for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


# ---------------------------------------------------------------- state.json with its own checksum

def state_bytes(doc: dict[str, Any]) -> bytes:
    """`doc` as state.json: JSON whose first field, self_sha256, is the sha256 of these bytes with it zeroed."""
    raw = json.dumps({"self_sha256": _ZEROS.decode(), **{k: v for k, v in doc.items() if k != "self_sha256"}}).encode()
    return _SELF + hashlib.sha256(raw).hexdigest().encode() + raw[len(_SELF) + 64:]


def write_state(folder: str | Path, doc: dict[str, Any]) -> None:
    """Write (or rewrite) `folder`/state.json from `doc` with a fresh self-checksum (not atomic by itself)."""
    (Path(folder) / "state.json").write_bytes(state_bytes(doc))


def parse_state(raw: bytes, where: str) -> dict[str, Any]:
    """state.json's bytes -> its mapping, after checking its self-checksum."""
    digest = raw[len(_SELF):len(_SELF) + 64]
    if not raw.startswith(_SELF) or len(digest) < 64:
        raise CorruptCheckpoint(f"{where}: state.json is damaged or truncated (its checksum field is missing)",
                                "the file was cut short or altered, or an older goodfit wrote it")
    if hashlib.sha256(_SELF + _ZEROS + raw[len(_SELF) + 64:]).hexdigest().encode() != digest:
        raise CorruptCheckpoint(f"{where}: state.json fails its sha256 checksum",
                                "the file was truncated or altered")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise CorruptCheckpoint(f"{where}: state.json is not valid JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("sha256"), dict):
        raise CorruptCheckpoint(f"{where}: state.json lacks the tensor files' checksums")
    return doc


# ---------------------------------------------------------------- save / load

def save_checkpoint(folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    state: dict[str, Any], previous: str | None = None) -> Path:
    """Write model + optimizer + state atomically to `folder` (replacing any previous checkpoint there)."""
    return save_state_dicts(folder, model.state_dict(), optimizer.state_dict() if optimizer is not None else None,
                            state, previous)


def _remove(path: Path) -> None:
    """Delete a file, folder or link at `path` (never following a link)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def save_state_dicts(folder: str | Path, model_state: dict[str, torch.Tensor], optimizer_state: dict | None,
                     state: dict[str, Any], previous: str | None = None) -> Path:
    """`save_checkpoint` from state dicts (e.g. a snapshot taken earlier). With `previous`, the
    replaced checkpoint is kept under that sibling name (one generation) instead of deleted.
    A disk that refuses the write raises CheckpointWriteFailed with the older checkpoints intact."""
    global _writes
    _writes += 1
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    try:
        _remove(tmp)
        tmp.mkdir(parents=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in model_state.items()}, str(tmp / "model.safetensors"))
        _fault("partial")
        files = ["model.safetensors"]
        meta: dict[str, Any] = {}
        if optimizer_state is not None:
            opt_tensors, meta = _split_optimizer(optimizer_state)
            save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
            files.append("optimizer.safetensors")
        write_state(tmp, {"format": FORMAT, **state, "optimizer": meta,
                          "sha256": {name: sha256(tmp / name) for name in files}})
        for name in [*files, "state.json"]:
            _fsync(tmp / name)
        _fsync(tmp)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_failed(folder, e) from None
    _fault("written")
    _swap(folder, tmp, folder.with_name(previous) if previous else None)
    return folder


def _swap(folder: Path, tmp: Path, prev: Path | None) -> None:
    """Put the complete `tmp` in place of `folder` by renames; the old one becomes `prev` (or is dropped).

    Each rename is atomic, so a crash between two of them leaves `folder`, or else the
    old checkpoint under `prev` / `folder.old`, whole (the reader's fall-backs)."""
    aside = prev if prev is not None else folder.with_name(folder.name + ".old")
    trash = aside.with_name(aside.name + ".trash")
    moved: list[tuple[Path, Path]] = []
    try:
        _remove(trash)
        if folder.exists():
            if aside.exists() or aside.is_symlink():
                aside.rename(trash)
                moved.append((trash, aside))
            folder.rename(aside)
            moved.append((aside, folder))
        _fault("swap")
        tmp.rename(folder)
        _fsync(folder.parent)
    except OSError as e:
        for src, dst in reversed(moved):  # undo, so that the chain on disk is what it was
            try:
                src.rename(dst)
            except OSError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_failed(folder, e) from None
    if prev is None:
        shutil.rmtree(aside, ignore_errors=True)
    shutil.rmtree(trash, ignore_errors=True)


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)  # a link is refused: it could point anywhere (or at /dev/zero)
    except OSError:
        return False


def read_checkpoint(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None, dict[str, Any]]:
    """(model tensors, optimizer tensors, state) from a checkpoint folder, checksums verified."""
    folder = Path(folder)
    if not (folder / "state.json").exists():
        old = folder.with_name(folder.name + ".old")
        if (old / "state.json").exists():
            folder = old  # the swap was interrupted after the old checkpoint moved aside
        else:
            raise CorruptCheckpoint(f"no checkpoint at {folder} (state.json missing)")
    if folder.is_symlink() or not _regular(folder / "state.json"):
        raise CorruptCheckpoint(f"checkpoint {folder}: state.json is not a regular file",
                                "a checkpoint holds plain files, not links")
    try:
        raw = (folder / "state.json").read_bytes()
    except OSError as e:
        raise CorruptCheckpoint(f"checkpoint {folder}: state.json is unreadable ({e.strerror})") from None
    state = parse_state(raw, f"checkpoint {folder}")
    names = state["sha256"]
    if "model.safetensors" not in names or any(n not in TENSOR_FILES for n in names):
        raise CorruptCheckpoint(f"checkpoint {folder}: state.json lists unexpected files {sorted(map(str, names))}",
                                "a checkpoint holds model.safetensors, optimizer.safetensors and state.json only")
    for name, digest in names.items():
        path = folder / name
        if not _regular(path) or sha256(path) != digest:
            raise CorruptCheckpoint(f"checkpoint {folder}: {name} is missing or fails its sha256 checksum",
                                    "the file was truncated or altered")
    try:
        model_sd = load_file(str(folder / "model.safetensors"))
        opt = load_file(str(folder / "optimizer.safetensors")) if "optimizer.safetensors" in names else None
    except (SafetensorError, OSError, ValueError, RuntimeError, MemoryError) as e:
        raise CorruptCheckpoint(f"checkpoint {folder}: a tensor file is not valid safetensors ({e})") from None
    return model_sd, opt, state


def load_checkpoint(folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
    """Load a checkpoint into `model` (and `optimizer`); returns its state dict (counters, RNG, callbacks)."""
    model_sd, opt_tensors, state = read_checkpoint(folder)
    try:
        model.load_state_dict(model_sd)
    except RuntimeError as e:
        raise UserError(f"checkpoint {folder} does not fit this model: {str(e).splitlines()[0]}",
                        "the recipe's model section must match the run that wrote it") from None
    if optimizer is not None and opt_tensors is not None:
        device = next(model.parameters()).device
        try:
            optimizer.load_state_dict(_join_optimizer({k: v.to(device) if v.ndim else v for k, v in opt_tensors.items()},
                                                      state["optimizer"]))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as e:
            raise CorruptCheckpoint(f"checkpoint {folder}: the optimizer state does not load "
                                    f"({type(e).__name__}: {e})") from None
    return state


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replace `path` by `text` all at once (temporary file, fsync, rename): a crash leaves old or new."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
