"""Shared test set-up: a private data cache and the CLI runner."""
import os
from pathlib import Path

import pytest

# generate MNIST-1D once per test session into a private cache, never the user's
os.environ.setdefault("GOODFIT_CACHE", str(Path(__file__).resolve().parent.parent / ".venv" / "goodfit-test-cache"))
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def cli():
    """Invoke the goodfit CLI in-process; returns (exit_code, output)."""
    from typer.testing import CliRunner

    from goodfit.cli import app

    runner = CliRunner()

    def invoke(*args):
        result = runner.invoke(app, [str(a) for a in args])
        return result.exit_code, result.output

    return invoke


def pytest_configure(config):
    # Tiny models gain nothing from intra-op threads, and on a 2-core CI machine shared with
    # subprocess tests, torch's default threads oversubscribe the cores (10-80x slowdowns seen).
    import torch

    torch.set_num_threads(1)
