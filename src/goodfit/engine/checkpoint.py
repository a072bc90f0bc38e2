"""Checkpoints: safetensors for tensors, JSON for the rest, written atomically, verified on load.

A checkpoint is a folder: `model.safetensors`, `optimizer.safetensors`, `state.json`
(counters, RNG states, scheduler/callback state, optimizer hyperparameters and the
sha256 of each tensor file). It is written into a temporary sibling folder, fsynced,
then swapped in by renames, so a crash at any instant leaves either the old or the new
checkpoint whole; `load_checkpoint` falls back to the old one if the swap was cut short.
Nothing is ever unpickled.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from goodfit.errors import UserError

FORMAT = 1


class CorruptCheckpoint(UserError):
    """A checkpoint whose files are missing or fail their checksum."""


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


# ---------------------------------------------------------------- save / load

def save_checkpoint(folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    state: dict[str, Any]) -> Path:
    """Write model + optimizer + state atomically to `folder` (replacing any previous checkpoint there)."""
    return save_state_dicts(folder, model.state_dict(), optimizer.state_dict() if optimizer is not None else None, state)


def save_state_dicts(folder: str | Path, model_state: dict[str, torch.Tensor], optimizer_state: dict | None,
                     state: dict[str, Any]) -> Path:
    """`save_checkpoint` from state dicts (e.g. a snapshot taken earlier)."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model_state.items()}, str(tmp / "model.safetensors"))
    files = ["model.safetensors"]
    meta: dict[str, Any] = {}
    if optimizer_state is not None:
        opt_tensors, meta = _split_optimizer(optimizer_state)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        files.append("optimizer.safetensors")
    doc = {"format": FORMAT, **state, "optimizer": meta,
           "sha256": {name: sha256(tmp / name) for name in files}}
    (tmp / "state.json").write_text(json.dumps(doc))
    for name in [*files, "state.json"]:
        _fsync(tmp / name)
    _fsync(tmp)
    # swap: folder -> old, tmp -> folder, drop old. A crash between the renames leaves `old` whole.
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    _fsync(folder.parent)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def read_checkpoint(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None, dict[str, Any]]:
    """(model tensors, optimizer tensors, state) from a checkpoint folder, checksums verified."""
    folder = Path(folder)
    if not (folder / "state.json").exists():
        old = folder.with_name(folder.name + ".old")
        if (old / "state.json").exists():
            folder = old  # the swap was interrupted after the old checkpoint moved aside
        else:
            raise CorruptCheckpoint(f"no checkpoint at {folder} (state.json missing)")
    try:
        state = json.loads((folder / "state.json").read_text())
    except (OSError, ValueError) as e:
        raise CorruptCheckpoint(f"checkpoint {folder}: state.json is unreadable ({e})") from None
    if not isinstance(state, dict) or not isinstance(state.get("sha256"), dict):
        raise CorruptCheckpoint(f"checkpoint {folder}: state.json lacks the checksums")
    for name, digest in state["sha256"].items():
        path = folder / name
        if name not in ("model.safetensors", "optimizer.safetensors") or not path.exists() or sha256(path) != digest:
            raise CorruptCheckpoint(f"checkpoint {folder}: {name} is missing or fails its sha256 checksum",
                                    "the file was truncated or altered; resume from another checkpoint")
    model_sd = load_file(str(folder / "model.safetensors"))
    opt = load_file(str(folder / "optimizer.safetensors")) if "optimizer.safetensors" in state["sha256"] else None
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
        optimizer.load_state_dict(_join_optimizer({k: v.to(device) if v.ndim else v for k, v in opt_tensors.items()},
                                                  state["optimizer"]))
    return state
