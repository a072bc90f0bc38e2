"""Combining accumulators: merge(other) equals one accumulator over the concatenated data, and
sync() does the same across real processes (torch.distributed with gloo on CPU)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from goodfit import metrics as gm

TOL = 1e-12


def data(kind: str, seed: int):
    """(accumulator factory, output, target) for one kind of accumulator, every metric name."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 120))
    if kind == "classification":
        k = 6
        y = torch.from_numpy(rng.integers(0, k, n))
        out = torch.from_numpy(rng.normal(size=(n, k))).float()
        out[torch.arange(n), y] += 1
        return lambda: gm.make_metrics(kind, gm.TASK_METRICS[kind], num_classes=k), out, y
    if kind == "binary":
        y = torch.from_numpy(rng.integers(0, 2, n))
        y[:2] = torch.tensor([0, 1])
        out = torch.from_numpy(rng.normal(size=n).round(1) + y.numpy())
        return lambda: gm.make_metrics(kind, gm.TASK_METRICS[kind]), out, y.float()
    if kind == "regression":
        y = torch.from_numpy(rng.normal(size=(n, 2)) * 3 + 1e3)
        out = y + torch.from_numpy(rng.normal(size=(n, 2)))
        return (lambda: gm.make_metrics(kind, gm.TASK_METRICS[kind], num_outputs=2,
                                        target_scale=torch.tensor([2.0, 0.5]), target_shift=torch.tensor([1.0, -3.0])),
                out, y)
    y = torch.from_numpy(rng.integers(0, 4, size=(n // 10 + 2, 5, 5)))
    y[0, 0, :] = 255
    out = torch.from_numpy(rng.normal(size=(y.shape[0], 4, 5, 5)))
    return lambda: gm.make_metrics(kind, gm.TASK_METRICS[kind], num_classes=4, ignore_index=255), out, y


KINDS = ("classification", "binary", "regression", "segmentation")


def same(a: dict[str, float], b: dict[str, float]) -> None:
    assert list(a) == list(b)
    for name in a:
        assert (math.isnan(a[name]) and math.isnan(b[name])) or abs(a[name] - b[name]) <= TOL, (name, a[name], b[name])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(5))
def test_merge_equals_one_accumulator_over_all_data(kind, seed):
    make, out, target = data(kind, seed)
    whole = make()
    whole.update(out, target)
    rng = np.random.default_rng(100 + seed)
    cuts = sorted(rng.integers(0, len(out) + 1, size=2).tolist())  # three parts, maybe an empty one
    parts = []
    for a, b in zip([0, *cuts], [*cuts, len(out)]):
        acc = make()
        if b > a:
            acc.update(out[a:b], target[a:b])
        parts.append(acc)
    merged = parts[0].merge(parts[1]).merge(parts[2])
    same(merged.compute(), whole.compute())
    assert merged.sync() is merged  # not distributed: a no-op
    same(merged.compute(), whole.compute())


def test_merge_refuses_a_different_accumulator():
    a = gm.make_metrics("classification", ["accuracy"], num_classes=3)
    with pytest.raises(ValueError, match="same kind"):
        a.merge(gm.make_metrics("classification", ["accuracy"], num_classes=4))
    with pytest.raises(ValueError, match="same outputs"):
        gm.RegressionMetrics(1, ["mse"]).merge(gm.RegressionMetrics(2, ["mse"]))
    with pytest.raises(ValueError, match="ignore_index"):
        gm.SegmentationMetrics(3).merge(gm.SegmentationMetrics(3, ignore_index=255))


def test_stats_expose_the_sufficient_statistics():
    acc = gm.make_metrics("classification", ["accuracy", "auroc", "ece"], num_classes=3)
    acc.update(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    stats = acc.stats()
    assert stats["counts"].shape == (10,) and stats["counts"][:9].sum() == 4
    assert stats["sums"].shape == (45,) and stats["scores"].shape == (4, 3) and stats["targets"].shape == (4,)
    reg = gm.make_metrics("regression", ["r2"], num_outputs=1)
    assert reg.stats() is None
    reg.update(torch.randn(5), torch.randn(5))
    assert set(reg.stats()) == {"n", "sse", "sae", "mean", "m2", "min", "max"}


WORKER = textwrap.dedent("""
    import json, sys
    import torch
    import torch.distributed as dist
    sys.path.insert(0, sys.argv[4])
    from test_metrics_sync import KINDS, data

    rank, world, store, out_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[5]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    results = {}
    for kind in KINDS:
        make, out, target = data(kind, 7)
        cut = len(out) // 3  # uneven shards: rank 0 a third, rank 1 the rest
        part = slice(0, cut) if rank == 0 else slice(cut, len(out))
        acc = make()
        acc.update(out[part], target[part])
        acc.sync()
        whole = make()
        whole.update(out, target)
        results[kind] = {"synced": acc.compute(), "whole": whole.compute()}
    # a process with no samples at all still joins the collectives
    empty = data("regression", 1)[0]()
    if rank == 1:
        make, out, target = data("regression", 1)
        empty.update(out, target)
    results["one_empty"] = empty.sync().compute()
    dist.destroy_process_group()
    with open(out_path, "w") as f:
        json.dump(results, f)
""")


def test_sync_across_two_gloo_processes(tmp_path: Path):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    tests_dir = str(Path(__file__).resolve().parent)
    outs = [tmp_path / f"rank{r}.json" for r in range(2)]
    procs = [subprocess.Popen([sys.executable, str(script), str(r), "2", str(tmp_path / "store"), tests_dir,
                               str(outs[r])], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(2)]
    for p in procs:
        output, _ = p.communicate(timeout=120)
        assert p.returncode == 0, output
    results = [json.loads(o.read_text()) for o in outs]
    make, out, target = data("regression", 1)
    alone = make()
    alone.update(out, target)
    for r in results:
        for kind in KINDS:
            same(r[kind]["synced"], r[kind]["whole"])
        same(r["one_empty"], alone.compute())
