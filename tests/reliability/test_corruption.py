"""Corrupted files: a truncated or bit-flipped tensor file or state.json is caught by its checksum; resume
falls back to the previous checkpoint (prev) with a warning and still ends bit-identical to the
uninterrupted run; with no good checkpoint left, or a damaged `best`, the command exits 2 and says why."""
import random
import shutil

import pytest
import reliability_harness as h
from hypothesis import given, settings
from hypothesis import strategies as st

from goodfit.engine.checkpoint import CorruptCheckpoint, read_checkpoint, save_checkpoint
from goodfit.runner import resume

from crash_helpers import Crash, CrashAt


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(reference run dir, a run crashed at step 20: last = step 18 (mid-epoch), prev = step 16 (epoch 2 end))."""
    import goodfit

    root = tmp_path_factory.mktemp("corruption")
    ref, _ = h.reference(root / "ref")
    with pytest.raises(Crash):
        goodfit.run(h.RECIPE, h.OVERRIDES, out=root / "cut", progress=False, callbacks=[CrashAt(20)])
    cut = h.only_run(root / "cut")
    assert read_checkpoint(cut / "checkpoints" / "last")[2]["fit"]["step"] == 18
    assert read_checkpoint(cut / "checkpoints" / "prev")[2]["fit"]["step"] == 16
    return ref.dir, cut


def _copy(src, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("victim, damage", [("model.safetensors", h.flip_bit), ("optimizer.safetensors", h.truncate),
                                            ("state.json", h.flip_bit), ("state.json", h.truncate)])
def test_damaged_last_falls_back_to_prev_and_ends_identical(runs, tmp_path, victim, damage):
    ref, cut = runs
    run_dir = _copy(cut, tmp_path)
    damage(run_dir / "checkpoints" / "last" / victim, random.Random(victim + damage.__name__))
    with pytest.warns(UserWarning) as caught:
        resume(run_dir, progress=False)
    said = [str(w.message) for w in caught]
    assert any(f"last: {'state.json' if victim == 'state.json' else victim}" in m and "falling back" in m
               for m in said) or any("falling back" in m and victim in m for m in said), said
    assert any("resuming from checkpoints/prev (step 16" in m for m in said), said
    assert (run_dir / "checkpoints" / "last.corrupt" / victim).exists()  # kept aside, out of the chain
    assert h.differences(ref, run_dir) == []


def test_no_good_checkpoint_left_exits_2(runs, tmp_path, cli):
    run_dir = _copy(runs[1], tmp_path)
    h.flip_bit(run_dir / "checkpoints" / "last" / "model.safetensors", random.Random(1))
    h.truncate(run_dir / "checkpoints" / "prev" / "state.json", random.Random(2))
    code, output = cli("resume", run_dir, "-q")
    assert code == 2 and "Traceback" not in output
    assert "no good checkpoint remains" in output and "fails its sha256 checksum" in output, output
    assert "falling back" in output  # the warning about `last` came first


def test_damaged_best_is_a_clear_error_for_evaluate_and_resume(runs, tmp_path, cli):
    run_dir = _copy(runs[1], tmp_path)
    h.flip_bit(run_dir / "checkpoints" / "best" / "model.safetensors", random.Random(3))
    code, output = cli("evaluate", run_dir, "--checkpoint", "best")
    assert code == 2 and "Traceback" not in output
    assert "cannot evaluate the best checkpoint" in output and "--checkpoint last" in output, output
    code, output = cli("resume", run_dir, "-q")
    assert code == 2 and "best model" in output and "restore_best: false" in output, output


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 6)).sum().backward()
    opt.step()
    folder = save_checkpoint(tmp_path_factory.mktemp("ck") / "last", model, opt, {"fit": {"step": 1}})
    return {name: (folder / name).read_bytes() for name in ("model.safetensors", "optimizer.safetensors", "state.json")}


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(["model.safetensors", "optimizer.safetensors", "state.json"]),
       where=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7), cut=st.booleans())
def test_every_bit_flip_and_truncation_is_detected(checkpoint, tmp_path_factory, name, where, bit, cut):
    folder = tmp_path_factory.mktemp("victim")
    for n, data in checkpoint.items():
        (folder / n).write_bytes(data)
    data = bytearray(checkpoint[name])
    i = int(where * len(data))
    if cut:
        data = data[:i]
    else:
        data[i] ^= 1 << bit
    (folder / name).write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpoint):
        read_checkpoint(folder)
