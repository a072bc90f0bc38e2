"""The command line: exit codes and one clear message for bad input (DESIGN §1.2)."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest


def _csv(path, header, rows):
    path.write_text("\n".join([",".join(header)] + [",".join(map(str, r)) for r in rows]) + "\n")
    return path


@pytest.fixture
def csv_file(tmp_path):
    rng = np.random.default_rng(0)
    rows = [[*np.round(rng.normal(size=3), 3), int(i % 2)] for i in range(60)]
    return _csv(tmp_path / "data.csv", ["a", "b", "c", "label"], rows)


def _bad_inputs(tmp_path, csv_file):
    rows = csv_file.read_text().splitlines()
    rows[5] = "inf," + rows[5].split(",", 1)[1]
    (tmp_path / "inf.csv").write_text("\n".join(rows) + "\n")
    np.savez(tmp_path / "range.npz", x=np.random.rand(20, 3).astype("float32"), y=np.array([0, 1] * 9 + [7, -1]),
             num_classes=2)
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 3), "float32"), y=np.zeros(0, "int64"))
    return {
        "unknown key": (["train", "--set", "optimizer.lrr=0.1"], "did you mean 'optimizer.lr'"),
        "wrong type": (["train", "--set", "train.batch_size=big"], "train.batch_size"),
        "missing file": (["train", str(tmp_path / "nope.yaml")], "does not exist"),
        "missing data file": (["train", "--set", f"data.source={tmp_path / 'nope.csv'}", "--set", "model.name=mlp"],
                              "nope.csv"),
        "csv without target": (["train", "--set", f"data.source={csv_file}", "--set", "data.target=y",
                                "--set", "model.name=mlp"], "label"),
        "nan/inf in features": (["train", "--set", f"data.source={tmp_path / 'inf.csv'}", "--set", "data.target=label",
                                 "--set", "model.name=mlp", "--set", "task=binary"], "row"),
        "npz label out of range": (["train", "--set", f"data.source={tmp_path / 'range.npz'}", "--set", "model.name=mlp"],
                                   "7"),
        "empty dataset": (["train", "--set", f"data.source={tmp_path / 'empty.npz'}", "--set", "model.name=mlp"], "empty"),
        "val + test >= 1": (["train", "--set", "data.split.val=0.6", "--set", "data.split.test=0.4"], "data.split"),
        "shape mismatch": (["train", "wine-mlp", "--set", "model.name=cnn"], "shape"),
        "unknown recipe": (["train", "digits-cnnn"], "digits-cnn"),
        "unknown metric": (["train", "--set", "metrics=[acuracy]"], "accuracy"),
        "not a run dir": (["resume", str(tmp_path)], "not a goodfit run directory"),
        "model too large": (["train", "digits-mlp", "--set", "model.width=1000000000000"], "does not fit in memory"),
    }


CASES = ["unknown key", "wrong type", "missing file", "missing data file", "csv without target", "nan/inf in features",
         "npz label out of range", "empty dataset", "val + test >= 1", "shape mismatch", "unknown recipe",
         "unknown metric", "not a run dir", "model too large"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_one_clear_message(cli, tmp_path, csv_file, case):
    args, expect = _bad_inputs(tmp_path, csv_file)[case]
    code, output = cli(*args, "--out", tmp_path / "runs") if args[0] == "train" else cli(*args)
    assert code == 2, output
    assert "Traceback" not in output
    assert "error:" in output and expect in output, output


def test_real_process_exit_code_and_no_traceback(tmp_path):
    p = subprocess.run([sys.executable, "-m", "goodfit", "train", "--set", "model.widht=3", "--out", str(tmp_path)],
                       capture_output=True, text=True)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and "did you mean 'model.width'" in p.stderr


def test_help_does_not_import_torch():
    code = "import sys, goodfit.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
    start = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "goodfit", "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "train" in p.stdout
    print(f"goodfit --help: {time.perf_counter() - start:.3f}s")  # reported, not asserted (noisy machines)


def test_version_and_recipes(cli):
    code, output = cli("--version")
    assert code == 0 and "goodfit" in output
    code, output = cli("recipes")
    assert code == 0
    for name in ["digits-cnn", "digits-mlp", "mnist1d-cnn", "breast-cancer-mlp", "wine-mlp", "diabetes-mlp"]:
        assert name in output


def test_train_evaluate_and_test_lock_from_the_cli(cli, tmp_path):
    code, output = cli("train", "wine-mlp", "--set", "train.epochs=2", "--out", tmp_path, "-q")
    assert code == 0, output
    assert "accuracy" in output and "run directory" in output
    run_dir = next((tmp_path / "wine-mlp").iterdir())
    code, output = cli("evaluate", run_dir, "--split", "val")
    assert code == 0 and "val_accuracy" in output
    code, output = cli("evaluate", run_dir, "--split", "test")
    assert code == 2 and "--force" in output
    code, output = cli("evaluate", run_dir, "--split", "test", "--force")
    assert code == 0 and "test_accuracy" in output


def test_divergence_exits_3_with_diagnosis(cli, tmp_path):
    code, output = cli("train", "digits-mlp", "--set", "optimizer.name=sgd", "--set", "optimizer.lr=1e6",
                       "--set", "optimizer.momentum=0", "--set", "train.epochs=3", "--set", "schedule.name=constant",
                       "--out", tmp_path, "-q")
    assert code == 3, output
    run_dir = next((tmp_path / "digits-mlp").iterdir())
    import json
    diag = json.loads((run_dir / "diagnosis.json").read_text())
    assert diag["verdict"] == "failed" and diag["findings"][0]["id"] == "divergence"


def test_evaluate_bad_arguments_exit_2(cli, tmp_path):
    code, output = cli("train", "wine-mlp", "--set", "train.epochs=1", "--out", tmp_path, "-q")
    assert code == 0, output
    run_dir = next((tmp_path / "wine-mlp").iterdir())
    for args, expect in [(["--split", "train"], "--split"), (["--checkpoint", "middle"], "--checkpoint")]:
        code, output = cli("evaluate", run_dir, *args)
        assert code == 2 and expect in output and "Traceback" not in output


def test_lab_run_without_ids_is_a_user_error(cli):
    code, output = cli("lab", "run")
    assert code == 2 and "--all" in output
