"""MNIST-1D generated offline from its reference generator, cached as .npz (never pickle)."""
from __future__ import annotations

import os
import random
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

_FILE = "mnist1d-v1.npz"  # bump the version if the generator arguments ever change
_KEYS = ("x", "y", "x_test", "y_test")


def cache_dir() -> Path:
    """$GOODFIT_CACHE, else $XDG_CACHE_HOME/goodfit, else ~/.cache/goodfit."""
    if os.environ.get("GOODFIT_CACHE"):
        return Path(os.environ["GOODFIT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "goodfit"


def _generate() -> dict[str, np.ndarray]:
    """Run the reference generator (4,000 train + 1,000 test) without disturbing global RNGs."""
    if "matplotlib.pyplot" not in sys.modules:
        import matplotlib

        matplotlib.use("Agg")  # mnist1d imports pyplot; a headless machine has no display
    import mnist1d.data

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        # make_dataset, never get_dataset: the latter downloads from the network and unpickles
        ds = mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    # float32 before caching, so a fresh and a cached load give bit-identical arrays
    return {"x": ds["x"].astype(np.float32), "y": ds["y"].astype(np.int64),
            "x_test": ds["x_test"].astype(np.float32), "y_test": ds["y_test"].astype(np.int64)}


def _read(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the file is missing, truncated or not what we wrote."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in _KEYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if arrays["x"].shape != (4000, 40) or arrays["x_test"].shape != (1000, 40):
        return None
    return arrays


def _write(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically: a crash mid-write leaves the old file or none, never half of one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".mnist1d-", suffix=".npz.tmp")
    except OSError:
        return  # an unwritable cache only costs regenerating next time
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)


def load_mnist1d() -> dict[str, np.ndarray]:
    """x (4000, 40), y, x_test (1000, 40), y_test: from the cache, generating it when needed."""
    path = cache_dir() / _FILE
    arrays = _read(path)
    if arrays is None:
        arrays = _generate()
        _write(path, arrays)
    return arrays
