"""The seed example trains both models on locally generated MNIST-1D (small budget)."""

import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parents[2] / "examples" / "seed_mnist1d.py"


@pytest.mark.slow
def test_seed_example_learns_above_chance():
    pytest.importorskip("mnist1d")
    spec = importlib.util.spec_from_file_location("seed_mnist1d", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(["--epochs", "5", "--samples", "1500", "--cell", "gru", "--lr", "1e-2"])
    accuracy = dict(zip(["digit", "task1", "task2"], results.values(), strict=True))
    assert accuracy["digit"] > 0.25  # 10 classes: chance is 0.1
    assert accuracy["task1"] > 0.57 and accuracy["task2"] > 0.57  # balanced binary tasks
