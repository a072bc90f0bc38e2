"""NumPy .npz files with arrays `x` and `y` (and optionally `num_classes`), read without pickle."""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from goodfit.data.dataset import RawData
from goodfit.errors import UserError

# what numpy and zipfile raise on a damaged archive (cut short, flipped bytes, a lying header)
_DAMAGED = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, NotImplementedError, RecursionError)


def _array(f, path: Path, key: str) -> np.ndarray:
    try:
        return f[key]
    except MemoryError:
        raise UserError(f"{path}: array '{key}' declares more data than fits in memory",
                        "the file is damaged, or too large to load at once") from None
    except _DAMAGED as e:
        if isinstance(e, ValueError) and "pickle" in str(e).lower():
            raise UserError(f"{path}: array '{key}' is a pickled object array; goodfit never unpickles data",
                            "save plain numeric arrays, e.g. np.savez(path, x=x.astype('float32'), y=y)") from None
        raise UserError(f"{path}: cannot read array '{key}' ({type(e).__name__}: {e})",
                        "the file is damaged or not written by numpy.savez") from None


def read_npz(path: Path) -> RawData:
    """Read `x` (n, ...) and `y` (n,) or (n, D); `num_classes` optionally declares K."""
    try:
        fh = open(path, "rb")  # ours to close: np.load leaks its own handle when the archive is damaged
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    with fh:
        try:
            f = np.load(fh, allow_pickle=False)  # a pickle (or an object array) is refused, never loaded
        except MemoryError:
            raise UserError(f"cannot read {path} as .npz: it declares more data than fits in memory") from None
        except _DAMAGED as e:
            raise UserError(f"cannot read {path} as .npz ({type(e).__name__}: {e or 'empty file'})",
                            "write it with numpy.savez") from None
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise UserError(f"{path} holds a single array, not named arrays x and y",
                            "write it with np.savez(path, x=x, y=y)")
        with f:
            keys = list(f.files)
            absent = [k for k in ("x", "y") if k not in keys]
            if absent:
                raise UserError(f"{path} has no array {' or '.join(repr(k) for k in absent)}; it holds: "
                                f"{', '.join(keys) or 'nothing'}",
                                "save the features as x and the targets as y: np.savez(path, x=x, y=y)")
            x, y = _array(f, path, "x"), _array(f, path, "y")
            k = _array(f, path, "num_classes") if "num_classes" in keys else None
    if x.dtype.kind not in "biuf":
        raise UserError(f"{path}: x has dtype {x.dtype}; features must be numbers", "convert x to float32")
    if y.dtype.kind not in "biuf":
        raise UserError(f"{path}: y has dtype {y.dtype}; targets must be numbers (class indices or values)",
                        "encode class names as integers 0..K-1")
    if x.ndim == 0 or y.ndim == 0:
        raise UserError(f"{path}: x and y must have one row per sample; got shapes {x.shape} and {y.shape}")
    num_classes = None
    if k is not None:
        if k.size != 1 or k.dtype.kind not in "iu" or int(k.reshape(())) < 1:
            raise UserError(f"{path}: num_classes must be one positive integer, got {k!r}")
        num_classes = int(k.reshape(()))
    x = x.astype(np.float64)
    if x.ndim == 1:
        x = x[:, None]  # one feature per sample
    return RawData(x=x, y=y, source=str(path), kind="npz", num_classes=num_classes)
