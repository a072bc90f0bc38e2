"""Checkpoints: atomic, checksummed, exact round trip of model, optimizer and RNG states."""
import json
import random

import numpy as np
import pytest
import torch

from goodfit.engine.checkpoint import (CorruptCheckpoint, load_checkpoint, rng_state, save_checkpoint,
                                       set_rng_state)


def _model_and_opt(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, opt


def test_round_trip_is_exact(tmp_path):
    model, opt = _model_and_opt()
    save_checkpoint(tmp_path / "last", model, opt, {"fit": {"step": 3}})
    model2, opt2 = _model_and_opt(seed=1)
    state = load_checkpoint(tmp_path / "last", model2, opt2)
    assert state["fit"]["step"] == 3
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    for k in s1["state"]:
        for name in s1["state"][k]:
            assert torch.equal(torch.as_tensor(s1["state"][k][name]), torch.as_tensor(s2["state"][k][name]))
    assert s1["param_groups"] == s2["param_groups"]


def test_state_json_records_sha256_and_only_safe_formats(tmp_path):
    model, opt = _model_and_opt()
    folder = save_checkpoint(tmp_path / "best", model, opt, {})
    doc = json.loads((folder / "state.json").read_text())
    assert set(doc["sha256"]) == {"model.safetensors", "optimizer.safetensors"}
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "optimizer.safetensors", "state.json"]


@pytest.mark.parametrize("victim", ["model.safetensors", "optimizer.safetensors"])
def test_bit_flip_is_detected(tmp_path, victim):
    model, opt = _model_and_opt()
    folder = save_checkpoint(tmp_path / "last", model, opt, {})
    data = bytearray((folder / victim).read_bytes())
    data[-5] ^= 0x01
    (folder / victim).write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpoint):
        load_checkpoint(folder, *_model_and_opt())


def test_truncated_state_json_is_detected(tmp_path):
    model, opt = _model_and_opt()
    folder = save_checkpoint(tmp_path / "last", model, opt, {})
    (folder / "state.json").write_text((folder / "state.json").read_text()[:20])
    with pytest.raises(CorruptCheckpoint):
        load_checkpoint(folder, *_model_and_opt())


def test_interrupted_swap_falls_back_to_old(tmp_path):
    model, opt = _model_and_opt()
    folder = save_checkpoint(tmp_path / "last", model, opt, {"tag": "old"})
    folder.rename(tmp_path / "last.old")  # crash after moving the old one aside, before the new one landed
    assert load_checkpoint(tmp_path / "last", *_model_and_opt())["tag"] == "old"


def test_overwrite_replaces_whole_checkpoint(tmp_path):
    model, opt = _model_and_opt()
    save_checkpoint(tmp_path / "last", model, opt, {"tag": 1})
    save_checkpoint(tmp_path / "last", model, opt, {"tag": 2})
    assert load_checkpoint(tmp_path / "last", *_model_and_opt())["tag"] == 2
    assert not (tmp_path / "last.tmp").exists() and not (tmp_path / "last.old").exists()


def test_rng_state_round_trips_through_json():
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    saved = json.loads(json.dumps(rng_state()))
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    set_rng_state(saved)
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]
