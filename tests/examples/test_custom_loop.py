"""The custom-loop example (shown in the README) runs and learns something."""

import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).parents[2] / "examples" / "custom_loop.py"


def test_custom_loop_example_runs_and_lowers_the_loss():
    spec = importlib.util.spec_from_file_location("custom_loop", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    history, results = module.main(
        ["--epochs", "3", "--samples", "300", "--weighting", "uncertainty"]
    )
    assert set(results) == {"digit", "position", "scale"}
    assert history[-1] < history[0]
