"""Hostile input: hypothesis strategies and the one contract each loader must keep on any input:
return a value, or raise UserError with a message (exit 2 at the command line); never anything else.

Targets: the recipe loader (mappings and YAML text), the `--set` parser, the CSV and NPZ readers
(through load_data: reader, checks, split), and the run-directory loader (recipe.yaml, the
checkpoint chain, state.json re-signed with hostile content, test.json, links). Used by
tests/reliability/test_hostile_input.py (few examples) and benchmarks/fault_injection.py (2,000 each).
"""
from __future__ import annotations

import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from goodfit.errors import UserError
from goodfit.recipe import RECIPES_DIR, Recipe, load_recipe

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-3, 300),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                    st.sampled_from(["mlp", "cnn", "relu", "adamw", "cosine", "digits", "wine", "none", "val_loss"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) |
                      st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)


def _keys(model: type[BaseModel] = Recipe, prefix: str = "") -> list[str]:
    """Every dotted key of the recipe schema (sections and leaves)."""
    out = []
    for name, field in model.model_fields.items():
        key = prefix + name
        out.append(key)
        for cand in (field.annotation, *getattr(field.annotation, "__args__", ())):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                out += _keys(cand, key + ".")
    return out


KEYS = _keys()
KEY = st.one_of(st.sampled_from(KEYS), st.text(max_size=15),
                st.builds(lambda k, j: f"{k}.{j}", st.sampled_from(KEYS), st.text(max_size=6)))
YAML_BITS = st.sampled_from([": ", "\n", "  ", "- ", "[", "]", "{", "}", ",", "&a ", "*a", "!!python/object:os.system ",
                             "!!binary ", "2020-13-45", "1e400", ".nan", "-.inf", "'", '"', "#", "? ", "|", ">",
                             "null", "~", "0x1f", "!!set ", "<<: ", "\t", "\x00", "\ud800", "é", "%YAML 1.2\n---\n"])


def expect_user_error(fn, *args, **kwargs):
    """fn(...) returns, or raises UserError with a message; any other exception fails the property."""
    try:
        return fn(*args, **kwargs)
    except UserError as e:
        assert e.message.strip(), "a UserError without a message"
        return None


# ---------------------------------------------------------------- recipes and --set

def check_recipe_mapping(doc: dict) -> None:
    recipe = expect_user_error(load_recipe, doc)
    if recipe is not None:  # what is saved in the run directory loads back to the same recipe
        again = load_recipe(_yaml_roundtrip(recipe.to_yaml()))
        assert again.to_dict() == recipe.to_dict()


def _yaml_roundtrip(text: str) -> dict:
    import yaml

    return yaml.safe_load(text)


recipe_mappings = st.dictionaries(KEY, VALUES, max_size=6).map(
    lambda flat: _nest(flat))


def _nest(flat: dict) -> dict:
    from goodfit.recipe import apply_overrides

    doc: dict = {}
    for k, v in flat.items():
        try:
            doc = apply_overrides(doc, {k: v})
        except UserError:
            pass  # a key below a value: that input is another example's business
    return doc


def check_recipe_text(text: str, tmp: Path) -> None:
    path = tmp / "recipe.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    expect_user_error(load_recipe, path)


def _mutate(text: str, edits: list[tuple[int, int, str]]) -> str:
    for pos, length, insert in edits:
        pos %= len(text) + 1
        text = text[:pos] + insert + text[pos + length:]
    return text


BUILTIN_TEXTS = [p.read_text() for p in sorted(RECIPES_DIR.glob("*.yaml"))]
recipe_texts = st.one_of(
    st.text(max_size=200),
    st.lists(st.one_of(YAML_BITS, st.text(max_size=6), st.sampled_from(KEYS)), max_size=30).map("".join),
    st.builds(_mutate, st.sampled_from(BUILTIN_TEXTS),
              st.lists(st.tuples(st.integers(0, 400), st.integers(0, 5), st.one_of(YAML_BITS, st.text(max_size=4))),
                       min_size=1, max_size=6)))

set_items = st.lists(st.builds(lambda k, sep, v: f"{k}{sep}{v}", KEY, st.sampled_from(["=", "=", "==", ":", ""]),
                               st.one_of(st.text(max_size=20), YAML_BITS,
                                         st.lists(st.one_of(YAML_BITS, st.text(max_size=3)), max_size=6).map("".join),
                                         VALUES.map(json.dumps))),
                     min_size=1, max_size=4)


def check_set_items(items: list[str]) -> None:
    recipe = expect_user_error(load_recipe, None, items)
    if recipe is not None:
        assert load_recipe(_yaml_roundtrip(recipe.to_yaml())).to_dict() == recipe.to_dict()


# ---------------------------------------------------------------- CSV and NPZ through load_data

CELLS = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-5, 5).map(str),
                  st.sampled_from(["", "na", "N/A", "inf", "-inf", "nan", "?", "abc", "b", '"q,x"', "1e400", "0x10",
                                   " 3 ", "1,5", "1;2", "\x00", "é", '"', "NULL", "None", "true"]),
                  st.text(max_size=5))


@st.composite
def csv_files(draw):
    if draw(st.integers(0, 9)) == 0:  # raw bytes now and then: binary junk, bad UTF-8, NULs
        return draw(st.binary(max_size=300)), draw(st.text(max_size=4))
    header = draw(st.lists(st.one_of(st.sampled_from(["a", "b", "label", "y", "x1"]), st.text(max_size=4)),
                           min_size=1, max_size=5))
    sep = draw(st.sampled_from([",", ";", "\t"]))
    n = draw(st.integers(0, 40))
    width = len(header)
    rows = [[draw(CELLS) if draw(st.integers(0, 3)) else str(draw(st.integers(0, 2))) for _ in range(width)]
            for _ in range(n)]
    if rows and draw(st.booleans()):  # ragged rows now and then
        rows[draw(st.integers(0, len(rows) - 1))].append("extra")
    text = "\n".join(sep.join(r) for r in [header, *rows]) + draw(st.sampled_from(["\n", "", "\n\n", "\r\n"]))
    target = draw(st.one_of(st.sampled_from(header), st.text(max_size=3)))
    return text.encode("utf-8", "surrogatepass"), target


TASKS = st.sampled_from(["classification", "binary", "regression"])


def check_data_file(path: Path, target: str | None, task: str, split: tuple[float, float], stratify: bool) -> None:
    from goodfit.data import load_data
    from goodfit.recipe import Data

    cfg = Data(source=str(path), target=target, split={"val": split[0], "test": split[1], "stratify": stratify})
    expect_user_error(load_data, cfg, task, 0)


SPLITS = st.sampled_from([(0.15, 0.15), (0.0, 0.2), (0.3, 0.0), (0.5, 0.45), (0.01, 0.01)])


def _npz_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # object arrays get pickled here: the reader must refuse them
    return buf.getvalue()


DTYPES = ["float32", "float64", "int64", "uint8", "bool", "float16", "complex64", "U3", "object", "datetime64[s]"]


@st.composite
def arrays(draw, rows: int):
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(st.sampled_from([(rows,), (rows, 3), (rows, 1, 4), (), (rows, 0), (0,), (rows + 1, 2)]))
    values = draw(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 9)),
                           min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    base = np.array(values, dtype="float64").reshape(shape)
    if dtype == "object":
        return np.array(values + [{"x": 1}], dtype=object)[:-1].reshape(shape)
    with np.errstate(all="ignore"):
        if dtype in ("U3", "datetime64[s]"):
            return base.astype("int64", casting="unsafe").astype(dtype) if dtype != "U3" else base.astype(dtype)
        return base.astype(dtype)


@st.composite
def npz_files(draw):
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=300))
    rows = draw(st.integers(0, 30))
    content = {}
    for key in draw(st.lists(st.sampled_from(["x", "y", "num_classes", "z"]), min_size=1, max_size=4, unique=True)):
        content[key] = draw(arrays(rows)) if key != "num_classes" else np.array(draw(st.one_of(
            st.integers(-2, 12), st.floats(allow_nan=True), st.just([2, 3]))))
    data = _npz_bytes(content)
    if kind == 1 and data:  # a damaged archive: flipped bytes or cut short
        cut = bytearray(data)
        for i in draw(st.lists(st.integers(0, len(cut) - 1), min_size=1, max_size=4)):
            cut[i] ^= 0xFF
        data = bytes(cut[:draw(st.integers(1, len(cut)))])
    return data


# ---------------------------------------------------------------- the run-directory loader

class RunDirFixture:
    """One real, finished, tiny run and the objects a resume builds, made once and copied per example."""

    def __init__(self, root: Path):
        import goodfit
        from goodfit.runner import build, load_run_recipe

        run = goodfit.run("wine-mlp", ["train.epochs=2", "train.checkpoint_every=3", "train.checkpoint_interval=0",
                                       "train.threads=1", "doctor.enabled=false"], out=root, progress=False)
        self.dir = run.dir
        self.parts = build(load_run_recipe(run.dir), progress=False)
        self.state_doc = json.loads((run.dir / "checkpoints" / "last" / "state.json").read_text())


RUN_FILES = ["recipe.yaml", "metrics.jsonl", "test.json", *[f"checkpoints/{c}/{f}" for c in ("last", "prev", "best")
             for f in ("state.json", "model.safetensors", "optimizer.safetensors")]]
RUN_OPS = ["flip", "truncate", "junk", "delete", "symlink", "resign", "resign", "pickle"]


def _leaves(doc, path=()):
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(doc, list) and doc:
        for i, v in enumerate(doc[:3]):
            yield from _leaves(v, (*path, i))
    yield path


def _set_at(doc, path, value):
    if not path:
        return value
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return doc


class Evil:
    """Unpickling this creates the marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def mutate_run_dir(d: Path, draw, marker: Path) -> str:
    """Damage one file of run directory `d` as `draw` decides; returns what was done."""
    from goodfit.engine.checkpoint import write_state

    name, op = draw(st.sampled_from(RUN_FILES)), draw(st.sampled_from(RUN_OPS))
    path = d / name
    if path.is_symlink() or not path.exists():
        return f"{name}: already replaced"
    if op == "flip":
        data = bytearray(path.read_bytes())
        if data:
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
        path.write_bytes(bytes(data))
    elif op == "truncate":
        path.write_bytes(path.read_bytes()[:draw(st.integers(0, max(0, path.stat().st_size - 1)))])
    elif op == "junk":
        path.write_bytes(draw(st.binary(max_size=200)))
    elif op == "delete":
        path.unlink()
    elif op == "symlink":
        path.unlink()
        path.symlink_to(draw(st.sampled_from(["/etc/passwd", "/dev/zero", str(marker.parent), "../../../x"])))
    elif op == "pickle":
        import pickle

        path.write_bytes(pickle.dumps(Evil(marker)))
    elif name.endswith("state.json"):  # re-signed: a valid checksum over hostile content
        try:
            doc = json.loads(path.read_bytes())
        except ValueError:
            return f"{name}: already damaged"
        leaf = draw(st.sampled_from(list(_leaves(doc))))
        write_state(path.parent, _set_at(doc, leaf, draw(VALUES)))
    else:
        path.write_text(json.dumps(draw(VALUES)))
    return f"{name}: {op}"


def check_run_dir(fx: RunDirFixture, d: Path) -> None:
    from goodfit.engine import recovery
    from goodfit.runner import load_run_recipe

    def load():
        recovery.check_run_dir(d)
        load_run_recipe(d)
        recovery.restore(d, fx.parts.trainer, fx.parts.early_stopping, warn=lambda m: None)
        if (d / "test.json").exists():
            recovery.read_test_record(d / "test.json")

    expect_user_error(load)


# ---------------------------------------------------------------- one hypothesis test per target

def properties(max_examples: int, counter: dict | None = None) -> dict:
    """{target: a no-argument function that runs `max_examples` generated inputs through it}."""
    counter = counter if counter is not None else {}
    cfg = settings(max_examples=max_examples, deadline=None, database=None,
                   suppress_health_check=list(HealthCheck))
    tmp = Path(tempfile.mkdtemp(prefix="goodfit-fuzz-"))

    def count(name):
        counter[name] = counter.get(name, 0) + 1

    @cfg
    @given(recipe_mappings)
    def recipe_mapping(doc):
        count("recipe loader (mappings)")
        check_recipe_mapping(doc)

    @cfg
    @given(recipe_texts)
    def recipe_text(text):
        count("recipe loader (YAML text)")
        check_recipe_text(text, tmp)

    @cfg
    @given(set_items)
    def set_parser(items):
        count("--set parser")
        check_set_items(items)

    @cfg
    @given(csv_files(), TASKS, SPLITS, st.booleans())
    def csv_reader(file, task, split, stratify):
        count("CSV reader")
        data, target = file
        path = tmp / "data.csv"
        path.write_bytes(data)
        check_data_file(path, target, task, split, stratify)

    @cfg
    @given(npz_files(), TASKS, SPLITS, st.booleans())
    def npz_reader(data, task, split, stratify):
        count("NPZ reader")
        path = tmp / "data.npz"
        path.write_bytes(data)
        check_data_file(path, None, task, split, stratify)

    fixture: list[RunDirFixture] = []

    @cfg
    @given(st.data())
    def run_dir_loader(data):
        count("run-directory loader")
        if not fixture:
            fixture.append(RunDirFixture(tmp / "base"))
        d = tmp / "case"
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(fixture[0].dir, d, symlinks=True)
        marker = tmp / "unpickled"
        for _ in range(data.draw(st.integers(1, 3))):
            mutate_run_dir(d, data.draw, marker)
        check_run_dir(fixture[0], d)
        assert not marker.exists(), "a pickle in the run directory was unpickled"

    return {"recipe loader (mappings)": recipe_mapping, "recipe loader (YAML text)": recipe_text,
            "--set parser": set_parser, "CSV reader": csv_reader, "NPZ reader": npz_reader,
            "run-directory loader": run_dir_loader}
