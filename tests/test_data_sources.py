"""Sources: CSV and NPZ readers, built-ins, MNIST-1D's cache, and the checks every source passes."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from goodfit.data import load_data
from goodfit.data import mnist1d_cache
from goodfit.errors import UserError
from goodfit.recipe import Data


def data(**kw) -> Data:
    return Data.model_validate(kw)


def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def user_error(cfg: Data, task: str = "classification") -> UserError:
    with pytest.raises(UserError) as e:
        load_data(cfg, task, 0)
    return e.value


def _csv_rows(n: int, rng) -> list[str]:
    colors = ["red", "green", "blue"]
    return [f"{i},{rng.normal():.4f},{colors[i % 3]},{['cat', 'dog'][i % 2]}" for i in range(n)]


# ------------------------------------------------------------------ CSV

def test_csv_one_hot_encodes_text_columns_and_maps_text_labels(tmp_path):
    rng = np.random.default_rng(0)
    path = write(tmp_path / "pets.csv", "id,size,color,label\n" + "\n".join(_csv_rows(60, rng)) + "\n")
    d = load_data(data(source=path, target="label", normalize="none"), "binary", 0)
    assert d.feature_names == ["id", "size", "color=blue", "color=green", "color=red"]
    assert d.class_names == ["cat", "dog"] and d.input_shape == (5,)
    x = d.x_train.numpy()
    ids = x[:, 0].astype(int)
    colors = np.array(["red", "green", "blue"])[ids % 3]
    expected = np.stack([colors == "blue", colors == "green", colors == "red"], 1).astype(np.float32)
    np.testing.assert_array_equal(x[:, 2:], expected)
    np.testing.assert_array_equal(d.y_train.numpy(), (ids % 2).astype(np.float32))  # cat=0, dog=1
    assert any("color -> 3 one-hot columns" in n for n in d.info["notes"])


def test_csv_numeric_labels_sort_as_numbers(tmp_path):
    rows = [f"{i * 0.5},{[2, 10, 3][i % 3]}" for i in range(30)]
    path = write(tmp_path / "n.csv", "f,grade\n" + "\n".join(rows))
    d = load_data(data(source=path, target="grade", split={"val": 0.2, "test": 0.2}), "classification", 0)
    assert d.class_names == ["2", "3", "10"] and d.num_classes == 3


def test_csv_missing_target_column_names_the_file_and_lists_columns(tmp_path):
    path = write(tmp_path / "t.csv", "alpha,beta,lable\n1,2,0\n3,4,1\n")
    e = user_error(data(source=path, target="label"))
    assert "t.csv" in e.message and "alpha, beta, lable" in e.message and "did you mean 'lable'" in e.hint
    e = user_error(data(source=path))
    assert "needs data.target" in e.message


def test_csv_missing_cells_are_refused_with_columns_and_counts(tmp_path):
    rows = [f"{i},{'' if i in (3, 8) else i * 2},{'NA' if i == 5 else 1.5},{i % 2}" for i in range(40)]
    path = write(tmp_path / "gaps.csv", "id,a,b,y\n" + "\n".join(rows))
    e = user_error(data(source=path, target="y"))
    assert "3 missing value(s)" in e.message and "'a' (2)" in e.message and "'b' (1)" in e.message
    assert "line 5" in e.message  # row 3 is the file's 5th line (after the header)
    assert "data.impute" in e.hint


def test_csv_imputation_uses_train_statistics_only(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.normal(10, 3, size=80)
    gaps = {4, 17, 33, 50, 71}
    rows = [f"{i},{'' if i in gaps else f'{a[i]:.6f}'},{i % 2}" for i in range(80)]
    path = write(tmp_path / "imp.csv", "id,a,y\n" + "\n".join(rows))
    d = load_data(data(source=path, target="y", impute="mean", normalize="none"), "classification", 0)
    train_ids = d.x_train[:, 0].numpy().astype(int)
    train_mean = np.mean([float(f"{a[i]:.6f}") for i in train_ids if i not in gaps])
    for x in (d.x_train, d.x_val, d.x_test):
        ids = x[:, 0].numpy().astype(int)
        filled = x[:, 1].numpy()[np.isin(ids, list(gaps))]
        np.testing.assert_allclose(filled, train_mean, rtol=1e-5)
    assert d.info["impute"] == {"strategy": "mean", "missing_cells": 5}


def test_csv_missing_target_values_are_refused(tmp_path):
    path = write(tmp_path / "ty.csv", "a,y\n1,0\n2,\n3,1\n")
    e = user_error(data(source=path, target="y"))
    assert "target column 'y' has 1 missing" in e.message and "line 3" in e.message


def test_csv_ragged_row_names_its_line(tmp_path):
    path = write(tmp_path / "r.csv", "a,b,y\n1,2,0\n3,1\n")
    assert "line 3 has 2 fields" in user_error(data(source=path, target="y")).message


def test_csv_semicolon_separator(tmp_path):
    path = write(tmp_path / "s.csv", "a;b;y\n" + "\n".join(f"{i};{i * 2};{i % 2}" for i in range(20)))
    d = load_data(data(source=path, target="y", split={"val": 0.2, "test": 0.2}), "classification", 0)
    assert d.feature_names == ["a", "b"]


def test_csv_task_checks(tmp_path):
    rows = "\n".join(f"{i},{['a', 'b', 'c'][i % 3]},{i * 0.37}" for i in range(30))
    path = write(tmp_path / "k.csv", "f,kind,value\n" + rows)
    assert "binary needs exactly 2 classes" in user_error(data(source=path, target="kind"), "binary").message
    e = user_error(data(source=path, target="kind"), "regression")
    assert "regression needs numeric targets" in e.message and "'a'" in e.message
    e = user_error(data(source=path, target="value"))
    assert "is not a class label" in e.message and "task: regression" in e.hint
    d = load_data(data(source=path, target="value", split={"stratify": False}), "regression", 0)
    assert d.feature_names == ["f", "kind=a", "kind=b", "kind=c"]


def test_csv_header_only_is_empty(tmp_path):
    path = write(tmp_path / "e.csv", "a,b,y\n")
    assert "empty" in user_error(data(source=path, target="y")).message


# ------------------------------------------------------------------ NPZ

def test_npz_label_out_of_range_names_row_and_value(tmp_path):
    y = np.array([0, 1, 2] * 10)
    y[7] = 5
    np.savez(tmp_path / "o.npz", x=np.zeros((30, 2)), y=y, num_classes=3)
    e = user_error(data(source=str(tmp_path / "o.npz")))
    assert "label 5 at row 7" in e.message and "[0, 3)" in e.message


def test_npz_pickled_object_array_is_refused(tmp_path):
    x = np.empty(4, dtype=object)
    x[:] = [{"a": 1}, [2], "3", None]
    np.savez(tmp_path / "p.npz", x=x, y=np.arange(4))
    e = user_error(data(source=str(tmp_path / "p.npz")))
    assert "pickled object array" in e.message and "'x'" in e.message


def test_npz_missing_arrays_lists_the_keys(tmp_path):
    np.savez(tmp_path / "k.npz", features=np.zeros((3, 2)), y=np.arange(3))
    e = user_error(data(source=str(tmp_path / "k.npz")))
    assert "no array 'x'" in e.message and "features" in e.message


def test_npz_row_count_mismatch(tmp_path):
    np.savez(tmp_path / "m.npz", x=np.zeros((10, 2)), y=np.zeros(9))
    assert "x has 10 rows but y has 9" in user_error(data(source=str(tmp_path / "m.npz"))).message


def test_npz_empty_dataset(tmp_path):
    np.savez(tmp_path / "z.npz", x=np.zeros((0, 3)), y=np.zeros(0))
    assert "is empty" in user_error(data(source=str(tmp_path / "z.npz"))).message


@pytest.mark.parametrize("bad,word", [(np.nan, "missing value"), (np.inf, "infinite value")])
def test_npz_non_finite_features_name_row_column_and_count(tmp_path, bad, word):
    x = np.ones((40, 3))
    x[12, 2] = x[30, 1] = bad
    np.savez(tmp_path / "f.npz", x=x, y=np.arange(40) % 2)
    e = user_error(data(source=str(tmp_path / "f.npz")))
    assert f"2 {word}" in e.message and "row 12" in e.message and "column [2]" in e.message


def test_npz_non_integer_labels_for_classification(tmp_path):
    np.savez(tmp_path / "c.npz", x=np.zeros((6, 2)), y=np.array([0, 1, 1.5, 0, 1, 0]))
    e = user_error(data(source=str(tmp_path / "c.npz")))
    assert "target 1.5 at row 2" in e.message


# ------------------------------------------------------------------ names, built-ins and tasks

def test_unknown_source_suggests_a_builtin():
    e = user_error(data(source="digts"))
    assert "unknown data source 'digts'" in e.message and "did you mean 'digits'" in e.hint


def test_missing_file_and_unsupported_type_are_named(tmp_path):
    assert "nope.csv does not exist" in user_error(data(source=str(tmp_path / "nope.csv"), target="y")).message
    (tmp_path / "d.txt").write_text("1,2\n")
    assert "not '.txt'" in user_error(data(source=str(tmp_path / "d.txt"))).message


def test_tasks_the_data_cannot_serve_are_refused():
    assert "binary needs exactly 2 classes" in user_error(data(source="digits"), "binary").message
    assert "regression dataset" in user_error(data(source="diabetes"), "classification").message
    assert "not supported" in user_error(data(source="digits"), "segmentation").message


def test_regression_on_class_labels_uses_them_as_numbers():
    d = load_data(data(source="iris", split={"stratify": False}), "regression", 0)
    restored = (d.y_train * d.target_scale + d.target_shift).numpy()
    np.testing.assert_allclose(np.sort(np.unique(restored.round(4))), [0, 1, 2], atol=1e-4)


@pytest.mark.parametrize("name,shape,k", [("digits", (1, 8, 8), 10), ("iris", (4,), 3), ("wine", (13,), 3)])
def test_builtin_shapes(name, shape, k):
    d = load_data(data(source=name), "classification", 0)
    assert d.input_shape == shape and d.num_classes == d.num_outputs == k
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64 and tuple(d.x_train.shape[1:]) == shape


# ------------------------------------------------------------------ MNIST-1D

@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("goodfit-cache")
    mp.setenv("GOODFIT_CACHE", str(path))
    yield path
    mp.undo()


def test_mnist1d_keeps_its_canonical_test_split(cache):
    np_state, py_state = np.random.get_state(), random.getstate()
    d = load_data(data(source="mnist1d", normalize="none", split={"val": 0.1, "test": 0.4}), "classification", 0)
    # the generator reseeds numpy's and Python's global RNGs; load_data must leave them as they were
    assert random.getstate() == py_state
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), np_state))
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (3600, 400, 1000)
    assert d.input_shape == (1, 40) and d.info["canonical_test"] is True
    assert any("canonical" in n for n in d.info["notes"])
    fresh = mnist1d_cache._generate()  # an independent run of the reference generator
    np.testing.assert_array_equal(d.x_test.numpy()[:, 0], fresh["x_test"])
    np.testing.assert_array_equal(d.y_test.numpy(), fresh["y_test"])
    assert (cache / "mnist1d-v1.npz").is_file()


def test_mnist1d_cache_is_npz_and_regenerated_when_corrupt(cache):
    first = mnist1d_cache.load_mnist1d()
    path = cache / "mnist1d-v1.npz"
    with np.load(path, allow_pickle=False) as f:
        assert sorted(f.files) == ["x", "x_test", "y", "y_test"]
    path.write_bytes(b"not a zip file")
    again = mnist1d_cache.load_mnist1d()
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert mnist1d_cache._read(path) is not None  # rewritten
    assert not list(cache.glob(".mnist1d-*"))  # no temporary file left behind
