"""Determinism: the same recipe and seed give bit-identical losses in metrics.jsonl across two runs (CPU);
another seed does not; train.deterministic switches torch's deterministic mode on for the run only."""
import os

import reliability_harness as h
import torch

import goodfit


def _events(tmp_path, name, extra=()):
    run = goodfit.run(h.RECIPE, [*h.OVERRIDES, "train.epochs=3", *extra], out=tmp_path / name, progress=False)
    return h.events(run.dir)


def test_same_seed_same_losses_bit_for_bit(tmp_path):
    a, b = _events(tmp_path, "a"), _events(tmp_path, "b")
    assert len([e for e in a if e["kind"] == "step"]) == 12  # every 2nd of 24 steps, with its loss
    assert a == b  # every logged loss, metric, LR and gradient norm, compared as exact floats
    assert _events(tmp_path, "c", ["seed=1"]) != a


class Flags:
    def on_fit_start(self, trainer, state):
        self.during = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
                       torch.backends.cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))


def test_deterministic_flag_is_on_during_the_run_and_restored_after(tmp_path, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic)
    flags = Flags()
    run = goodfit.run(h.RECIPE, [*h.OVERRIDES, "train.epochs=3", "train.deterministic=true"], out=tmp_path / "d",
                      progress=False, callbacks=[flags])
    assert flags.during == (True, True, False, ":4096:8")
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic) == before
    assert h.events(run.dir) == _events(tmp_path, "plain")  # on CPU it changes no number
