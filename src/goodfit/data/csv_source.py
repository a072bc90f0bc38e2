"""CSV files: numeric columns as features, text columns one-hot encoded, one target column."""
from __future__ import annotations

import csv
import difflib
from pathlib import Path

import numpy as np

from goodfit.data.dataset import RawData
from goodfit.errors import UserError

# cells that mean "no value"; compared lower-cased after stripping spaces
MISSING = ("", "na", "n/a", "nan", "null", "none", "?")


def _delimiter(header_line: str) -> str:
    """The separator that splits the header most often (',' ';' or tab), so ';'-CSVs work too."""
    counts = {d: header_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _read_rows(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            first = f.readline()
            f.seek(0)
            reader = csv.reader(f, delimiter=_delimiter(first))
            header = next(reader, None)
            rows, lines = [], []
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue  # blank lines carry no sample
                if len(row) != len(header):
                    raise UserError(f"{path}: line {reader.line_num} has {len(row)} fields, the header has {len(header)}",
                                    "every row needs one value per column (an empty cell is a missing value)")
                rows.append([cell.strip() for cell in row])
                lines.append(reader.line_num)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"cannot read CSV {path}: {e}", "save it as UTF-8 text with a header row") from None
    if header is None:
        raise UserError(f"{path} is empty: no header and no rows", "a CSV needs a header row and at least one data row")
    header = [h.strip() for h in header]
    seen = {h for h in header if header.count(h) > 1}
    if seen:
        raise UserError(f"{path}: duplicate column names {sorted(seen)}", "give every column a distinct name")
    return header, rows, lines


def _as_numbers(cells: np.ndarray, missing: np.ndarray) -> np.ndarray | None:
    """The column as float64 with NaN where missing, or None if some present cell is not a number."""
    out = np.full(len(cells), np.nan)
    try:
        out[~missing] = cells[~missing].astype(np.float64)
    except ValueError:
        return None
    return out


def _target(path: Path, name: str, cells: np.ndarray, lines: np.ndarray) -> np.ndarray:
    missing = np.isin(np.char.lower(cells), MISSING)
    if missing.any():
        where = ", ".join(f"line {int(n)}" for n in lines[missing][:5])
        raise UserError(f"{path}: target column '{name}' has {int(missing.sum())} missing value(s), first at {where}",
                        "drop those rows: a missing label cannot be imputed")
    numbers = _as_numbers(cells, missing)
    return cells if numbers is None else numbers


def read_csv(path: Path, target: str | None) -> RawData:
    """Read a CSV: the target column as y, every other column as features (text ones one-hot)."""
    header, rows, lines = _read_rows(path)
    if target is None or target not in header:
        close = difflib.get_close_matches(str(target), header, n=1) if target else []
        what = "needs data.target, the column to predict" if target is None else f"has no column '{target}'"
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise UserError(f"{path} {what}; its columns are: {', '.join(header)}",
                        hint + "set data.target to one of them")
    if not rows:
        raise UserError(f"{path} has a header but no data rows (empty dataset)", "add at least one row per class")
    table = np.array(rows, dtype=str)
    line_of = np.array(lines)
    t = header.index(target)
    y = _target(path, target, table[:, t], line_of)

    columns, names, encoded = [], [], []
    for j, name in enumerate(header):
        if j == t:
            continue
        cells = table[:, j]
        missing = np.isin(np.char.lower(cells), MISSING)
        numbers = _as_numbers(cells, missing)
        if numbers is not None:
            columns.append(numbers[:, None])
            names.append(name)
            continue
        # text column: one indicator per category; the vocabulary comes from the whole file (it is
        # structure, not a statistic), so a category seen only in val/test still has its column
        categories = sorted(set(cells[~missing].tolist()))
        onehot = (cells[:, None] == np.array(categories)[None, :]).astype(np.float64)
        onehot[missing] = np.nan  # a missing category is missing in every indicator: impute may fill it
        columns.append(onehot)
        names.extend(f"{name}={c}" for c in categories)
        encoded.append(f"{name} -> {len(categories)} one-hot columns")
    x = np.concatenate(columns, axis=1) if columns else np.zeros((len(rows), 0))
    notes = [f"one-hot encoded text column {e}" for e in encoded]
    return RawData(x=x, y=y, source=str(path), kind="csv", feature_names=names,
                   remap_labels=True, row_lines=line_of, notes=notes)
