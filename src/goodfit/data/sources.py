"""data.source -> RawData: a built-in name, a .csv path or a .npz path."""
from __future__ import annotations

import difflib
from pathlib import Path

from goodfit.data.builtin import BUILTINS
from goodfit.data.csv_source import read_csv
from goodfit.data.dataset import RawData
from goodfit.data.npz_source import read_npz
from goodfit.errors import UserError

_READERS = {".csv": "csv", ".npz": "npz"}


def read_source(source: str, target: str | None) -> RawData:
    """Dispatch on the source: built-in name first, then file type by suffix."""
    if source in BUILTINS:
        return BUILTINS[source]()
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if suffix in _READERS:
        if not path.is_file():
            raise UserError(f"data file {path} does not exist", "check data.source (relative paths start at the current directory)")
        return read_csv(path, target) if suffix == ".csv" else read_npz(path)
    builtins = ", ".join(BUILTINS)
    if path.is_dir():
        raise UserError(f"data.source {source!r} is a folder; image folders are not supported yet",
                        f"give a .csv or .npz file, or a built-in: {builtins}")
    if path.exists() or suffix:
        raise UserError(f"data.source {source!r}: goodfit reads .csv and .npz files, not '{suffix or 'no suffix'}'",
                        f"convert it, or use a built-in: {builtins}")
    close = difflib.get_close_matches(source, list(BUILTINS), n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise UserError(f"unknown data source {source!r}: not a built-in dataset nor a .csv/.npz file",
                    f"{hint}built-ins: {builtins}")
