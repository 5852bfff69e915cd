"""A sequence stored as columns: one block of columns per feature, one column per step."""

import io

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from attnmtl.data.files import build_files as build_scaled
from attnmtl.pipeline import train_run
from attnmtl.run.config import parse_config
from attnmtl.run.predict import predict_run


def build_files(*args, **kwargs):
    """The files data set with raw inputs and targets (scaling is on by default)."""
    return build_scaled(*args, **{"standardize": False, "standardize_targets": False, **kwargs})


STEPS = 10
TASKS = {"up": {"kind": "binary"}, "next": {"kind": "regression"}}


def blocks_file(tmp_path, n=80):
    """Two series a and b as column blocks, interleaved in the header (a_t00, b_t00, a_t01...)."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(n, STEPS)).cumsum(1)
    b = rng.normal(size=(n, STEPS))
    frame = pd.DataFrame({"id": range(n)})
    for t in range(STEPS):
        frame[f"a_t{t:02d}"] = a[:, t]
        frame[f"b_t{t:02d}"] = b[:, t]
    frame["up"] = (a[:, -1] > a[:, -2]).astype(int)
    frame["next"] = a[:, -1] + 0.1 * rng.normal(size=n)
    path = tmp_path / "blocks.csv"
    frame.to_csv(path, index=False)
    return path, a, b


def test_column_blocks_become_steps_by_features(tmp_path):
    path, a, b = blocks_file(tmp_path)
    inputs = {"a": "a_t*", "b": [f"b_t{t:02d}" for t in range(STEPS)]}
    splits = build_files(path, inputs, TASKS, layout="sequence", val_fraction=0.1, seed=1)
    whole = np.concatenate([a[:, :, None], b[:, :, None]], 2).astype(np.float32)  # (N, T, 2)
    assert splits.train.inputs.shape[1:] == (STEPS, 2)
    for _, data in splits.items():
        rows = [int(np.flatnonzero(whole[:, 0, 0] == float(x[0, 0]))[0]) for x in data.inputs]
        np.testing.assert_array_equal(data.inputs.numpy(), whole[rows])


@pytest.mark.parametrize(
    ("inputs", "layout", "message"),
    [
        ({"a": "c_t*"}, "sequence", r"inputs.a='c_t\*' matches no column"),
        ({"a": "a_t*", "b": ["b_t00"]}, "sequence", r"different numbers of steps"),
        ({"a": "a_t*", "b": "a_t0*"}, "sequence", r"column 'a_t00' is in inputs.a and inputs.b"),
        ({"a": "a_t*"}, "table", r"set layout: sequence"),
    ],
)
def test_bad_column_blocks_are_one_line(tmp_path, inputs, layout, message):
    path, _, _ = blocks_file(tmp_path)
    with pytest.raises(ValueError, match=message):
        build_files(path, inputs, TASKS, layout=layout)


def test_a_gru_trains_on_column_blocks_and_predicts_the_same_file(tmp_path):
    path, _, _ = blocks_file(tmp_path)
    data = {
        "name": "files",
        "path": str(path),
        "inputs": {"a": "a_t*", "b": "b_t*"},
        "layout": "sequence",
        "tasks": TASKS,
        "id_columns": ["id"],
        "standardize": True,
        "standardize_targets": True,
    }
    model = {"name": "attention_mtl", "encoder_options": {"cell": "gru", "hidden_dim": 8}}
    train = {"epochs": 2, "report": False, "tensorboard": False, "progress": False}
    config = parse_config({"data": data, "model": model, "train": train})
    run_dir, summary = train_run(config, tmp_path / "run", Console(file=io.StringIO()))
    assert set(summary["tasks"]) == {"up", "next"}
    out = tmp_path / "p.csv"
    assert predict_run(run_dir, str(path), out, console=Console(file=io.StringIO())) == 80
    frame = pd.read_csv(out)
    assert list(frame.columns[:2]) == ["id", "up"] and "next" in frame.columns
