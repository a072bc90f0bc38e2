"""Hostile input: generated recipes, --set items, CSV and NPZ files and damaged run directories never raise
anything but UserError (exit 2, a message); a recipe cannot write outside --out; YAML is read safely;
nothing is ever unpickled (a planted pickle never runs); a run directory with links is refused.

The default suite tries FEW inputs per target; `-m slow` tries 2,000 each (benchmarks/fault_injection.py too)."""
import ast
import json
import pickle
import shutil
from pathlib import Path

import fuzz_targets
import numpy as np
import pytest

import goodfit
from goodfit.engine.checkpoint import sha256, write_state

TARGETS = list(fuzz_targets.properties(1))
# inputs per target in the default suite: the cheap loaders get more (the run directory copies a run each time)
FEW = {"CSV reader": 100, "NPZ reader": 100, "run-directory loader": 50}


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_never_raises_anything_but_user_error(target):
    counter = {}
    fuzz_targets.properties(FEW.get(target, 200), counter)[target]()
    assert counter[target] >= FEW.get(target, 200)


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_2000_inputs_each(target):
    counter = {}
    fuzz_targets.properties(2000, counter)[target]()
    assert counter[target] >= 2000


# ---------------------------------------------------------------- paths: nothing outside --out

@pytest.mark.parametrize("name", ["../../escaped", "/tmp/absolute", "a/b", "..", ".", "x/../../y", "~root", "a\\b"])
def test_a_recipe_name_cannot_leave_out(cli, tmp_path, name):
    out = tmp_path / "deep" / "out"
    code, output = cli("train", "wine-mlp", "--set", f"name={name}", "--set", "train.epochs=1", "-q", "--out", out)
    assert code == 2 and "Traceback" not in output and "name" in output, output
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_link_under_out_is_not_followed(cli, tmp_path):
    elsewhere, out = tmp_path / "elsewhere", tmp_path / "out"
    elsewhere.mkdir()
    out.mkdir()
    (out / "wine-mlp").symlink_to(elsewhere)
    code, output = cli("train", "wine-mlp", "--set", "train.epochs=1", "-q", "--out", out)
    assert code == 2 and "symbolic link" in output and "Traceback" not in output, output
    assert list(elsewhere.iterdir()) == []


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run = goodfit.run("wine-mlp", ["train.epochs=2", "train.threads=1", "train.checkpoint_interval=0"],
                      out=tmp_path_factory.mktemp("finished"), progress=False)
    return run.dir


def _copy(run_dir, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run_dir, dst)
    return dst


def test_a_link_in_the_run_directory_is_refused_and_its_target_untouched(cli, finished, tmp_path):
    run_dir = _copy(finished, tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (run_dir / "metrics.jsonl").unlink()
    (run_dir / "metrics.jsonl").symlink_to(victim)  # resume would truncate and append to it
    for args in (["resume", run_dir, "-q"], ["evaluate", run_dir, "--split", "test", "--force"]):
        code, output = cli(*args)
        assert code == 2 and "symbolic link" in output and "Traceback" not in output, output
    assert victim.read_text() == "precious\n"


# ---------------------------------------------------------------- YAML: safe loader only

PYTHON_TAGS = ["!!python/object/apply:pathlib.Path.touch [{marker}]",
               "!!python/object/new:pathlib.PosixPath [{marker}]",
               "!!python/name:os.system", "!!python/module:os"]


@pytest.mark.parametrize("tag", PYTHON_TAGS)
def test_python_yaml_tags_are_rejected_and_never_run(cli, tmp_path, finished, tag):
    marker = tmp_path / "ran"
    value = tag.format(marker=json.dumps(str(marker)))
    recipe = tmp_path / "evil.yaml"
    recipe.write_text(f"name: {value}\ntrain: {{epochs: 1}}\n")
    code, output = cli("train", recipe, "-q", "--out", tmp_path / "runs")
    assert code == 2 and "not valid YAML" in output and "Traceback" not in output, output
    run_dir = _copy(finished, tmp_path)  # the same in a run directory's recipe.yaml
    (run_dir / "recipe.yaml").write_text(f"seed: {value}\n" + (finished / "recipe.yaml").read_text())
    code, output = cli("resume", run_dir, "-q")
    assert code == 2 and "not valid YAML" in output, output
    code, output = cli("train", "wine-mlp", "--set", f"loss.evil={value}", "-q", "--out", tmp_path / "runs")
    assert code == 2 and "Traceback" not in output, output  # kept as text, then refused by the loss registry
    assert not marker.exists()


# ---------------------------------------------------------------- pickles: refused, never run

class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _plant_pickle(folder: Path, marker: Path, name: str) -> None:
    """Replace a checkpoint's tensor file by a code-running pickle and re-sign state.json to match it."""
    (folder / name).write_bytes(pickle.dumps(Evil(marker)))
    doc = json.loads((folder / "state.json").read_text())
    doc["sha256"][name] = sha256(folder / name)
    write_state(folder, doc)


def test_pickles_in_a_run_directory_are_refused_and_never_run(cli, finished, tmp_path):
    marker = tmp_path / "ran"
    run_dir = _copy(finished, tmp_path)
    for name in ("last", "prev", "best"):
        _plant_pickle(run_dir / "checkpoints" / name, marker, "model.safetensors")
    code, output = cli("resume", run_dir, "-q")
    assert code == 2 and "not valid safetensors" in output and "no good checkpoint remains" in output, output
    code, output = cli("evaluate", run_dir, "--checkpoint", "best")
    assert code == 2 and "not valid safetensors" in output, output
    # a .pt next to the tensors, listed in the checksums: refused by name, never opened
    run_dir = _copy(finished, tmp_path / "2")
    last = run_dir / "checkpoints" / "last"
    (last / "model.pt").write_bytes(pickle.dumps(Evil(marker)))
    doc = json.loads((last / "state.json").read_text())
    doc["sha256"]["model.pt"] = sha256(last / "model.pt")
    write_state(last, doc)
    code, output = cli("evaluate", run_dir, "--checkpoint", "last")
    assert code == 2 and "unexpected files" in output, output
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["object array in .npz", "pickle named .npz", "pickle as .pt", "pickle as .pkl"])
def test_pickled_data_files_are_refused_and_never_run(cli, tmp_path, kind):
    marker = tmp_path / "ran"
    evil = pickle.dumps(Evil(marker))
    if kind == "object array in .npz":
        path = tmp_path / "data.npz"
        np.savez(path, x=np.array([Evil(marker)] * 4, dtype=object), y=np.arange(4))
    else:
        path = tmp_path / {"pickle named .npz": "data.npz", "pickle as .pt": "data.pt", "pickle as .pkl": "d.pkl"}[kind]
        path.write_bytes(evil)
    code, output = cli("train", "--set", f"data.source={path}", "--set", "model.name=mlp", "-q",
                       "--out", tmp_path / "runs")
    assert code == 2 and "Traceback" not in output, output
    assert not marker.exists()


UNSAFE = {("pickle", "load"), ("pickle", "loads"), ("marshal", "loads"), ("marshal", "load"), ("yaml", "load"),
          ("yaml", "unsafe_load"), ("yaml", "full_load"), ("joblib", "load"), ("dill", "load"), ("dill", "loads"),
          ("shelve", "open"), ("pd", "read_pickle"), ("pandas", "read_pickle")}


def test_the_source_has_no_unpickling_call():
    """Static guarantee: no pickle/marshal/unsafe-YAML load, torch.load only with weights_only=True,
    np.load never with allow_pickle=True, no eval/exec, anywhere in src/goodfit."""
    bad = []
    for path in sorted((Path(goodfit.__file__).parent).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else None
            kwargs = {k.arg: k.value for k in node.keywords}
            where = f"{path.name}:{node.lineno}"
            if (owner, name) in UNSAFE or (isinstance(f, ast.Name) and name in ("eval", "exec", "__import__")):
                bad.append(f"{where} {owner}.{name}")
            if (owner, name) == ("torch", "load") and not (isinstance(kwargs.get("weights_only"), ast.Constant)
                                                          and kwargs["weights_only"].value is True):
                bad.append(f"{where} torch.load without weights_only=True")
            if name == "load" and owner in ("np", "numpy") and isinstance(kwargs.get("allow_pickle"), ast.Constant) \
                    and kwargs["allow_pickle"].value is not False:
                bad.append(f"{where} np.load(allow_pickle=True)")
    assert bad == []
