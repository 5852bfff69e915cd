"""A tiny finished run (MNIST-1D, 2 tasks, 2 epochs) and its report, shared by the report tests."""

import pytest

from attnmtl.pipeline import train_run
from attnmtl.report import build_report
from attnmtl.run.config import parse_config

TINY = {
    "name": "tiny",
    "data": {
        "name": "mnist1d-mt",
        "num_train": 32,
        "num_val": 16,
        "num_test": 16,
        "tasks": ["digit", "scale"],
    },
    "model": {"name": "attention_mtl", "encoder_options": {"hidden_dim": 8}},
    "weighting": {"name": "uncertainty"},
    "optimizer": {"lr": 0.01},
    "train": {
        "epochs": 2,
        "batch_size": 16,
        "log_every": 1,
        "monitor": "digit:accuracy",
        "progress": False,
        "tensorboard": False,
    },
}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished tiny run directory (read-only for tests: copy it before changing it)."""
    run_dir, _ = train_run(parse_config(TINY), tmp_path_factory.mktemp("report") / "run")
    return run_dir


@pytest.fixture(scope="session")
def tiny_report(tiny_run):
    """The tiny run's report.html."""
    return build_report(tiny_run, examples=2)
