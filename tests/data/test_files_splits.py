"""files: splits by a column, chronological validation, identifier columns."""

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


TASKS = {"up": {"kind": "binary"}}


def series_file(tmp_path, n=60, seed=0, split=None):
    """Rows with a date (shuffled in the file), an id, a feature equal to the row's time index
    and a binary label; ``split`` gives the split column's values."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    frame = pd.DataFrame(
        {
            "id": [f"r{i}" for i in order],
            "date": pd.date_range("2024-01-01", periods=n, freq="D")[order].strftime("%Y-%m-%d"),
            "t": order.astype(float),
            "noise": rng.normal(size=n),
            "up": (order % 2).astype(int),
        }
    )
    if split is not None:
        frame["split"] = split(order)
    path = tmp_path / "series.csv"
    frame.to_csv(path, index=False)
    return path


def test_a_split_column_gives_the_splits_and_validation_comes_from_the_training_rows(tmp_path):
    path = series_file(tmp_path, split=lambda t: np.where(t >= 45, "test", "train"))
    splits = build_files(path, ["t", "noise"], TASKS, split_column="split", id_columns=["id"])
    assert sorted(splits.test.inputs[:, 0].tolist()) == list(range(45, 60))  # exactly those rows
    train_t = set(splits.train.inputs[:, 0].tolist()) | set(splits.val.inputs[:, 0].tolist())
    assert train_t == set(map(float, range(45)))
    assert len(splits.val) == round(0.15 * 45)
    assert splits.info["split_column"] == "split" and splits.info["id_columns"] == ["id"]


def test_validation_by_time_is_the_latest_training_rows(tmp_path):
    path = series_file(tmp_path, split=lambda t: np.where(t >= 50, "test", "train"))
    by_date = build_files(
        path, ["noise"], TASKS, split_column="split", val_split="last", time_column="date"
    )
    plain = build_files(path, ["t"], TASKS, split_column="split", val_split="last")
    # ranks in time: the date column orders the shuffled rows; the val rows are the last 8 days
    frame = pd.read_csv(path)
    dates = frame.loc[frame["split"] == "train", "date"].sort_values()
    assert len(by_date.val) == round(0.15 * 50) == 8
    assert by_date.info["val_split"] == "last by date"
    val_noise = sorted(by_date.val.inputs[:, 0].tolist())
    want = frame.set_index("date").loc[dates.iloc[-8:], "noise"].astype("float32").tolist()
    np.testing.assert_allclose(val_noise, sorted(want), rtol=1e-6)
    # without a time column, file order: the last 8 training rows as they stand in the file
    train_rows = frame.index[frame["split"] == "train"]
    last_t = frame.loc[train_rows[-8:], "t"].tolist()
    assert sorted(plain.val.inputs[:, 0].tolist()) == sorted(last_t)


def test_chronological_validation_with_a_random_test_split(tmp_path):
    path = series_file(tmp_path)
    splits = build_files(path, ["t"], TASKS, val_split="last", time_column="date")
    val_t, train_t = splits.val.inputs[:, 0], splits.train.inputs[:, 0]
    assert float(val_t.min()) > float(train_t.max())  # validation after every training row


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"split_column": "split"},
            r"split column 'split', row \d+: 'dev' \(3 rows\) mean no split",
        ),
        ({"split_column": "split", "test_path": "x.csv"}, r"give the splits one way"),
        ({"time_column": "date"}, r"time_column='date' orders val_split: last"),
        ({"val_split": "middle"}, r"val_split='middle'; expected one of: random, last"),
        ({"split_column": "split", "split_values": {"train": ["train"]}}, r"expected train and"),
        ({"id_columns": ["t"]}, r"column 't' is an input and a split, time or id column"),
    ],
)
def test_bad_split_options_are_one_line(tmp_path, options, message):
    labels = lambda t: np.where(t < 3, "dev", np.where(t >= 45, "test", "train"))  # noqa: E731
    path = series_file(tmp_path, split=labels)
    with pytest.raises(ValueError, match=message):
        build_files(path, ["t"], TASKS, **options)


def test_predict_copies_the_id_columns_into_its_output(tmp_path):
    path = series_file(tmp_path, split=lambda t: np.where(t >= 45, "test", "train"))
    data = {
        "name": "files",
        "path": str(path),
        "inputs": ["t", "noise"],
        "tasks": TASKS,
        "split_column": "split",
        "id_columns": ["id"],
        "time_column": "date",
        "val_split": "last",
        "standardize": True,
    }
    config = parse_config(
        {
            "data": data,
            "model": {"name": "attention_mtl", "encoder": "mlp"},
            "train": {"epochs": 1, "report": False, "tensorboard": False, "progress": False},
        }
    )
    run_dir, _ = train_run(config, tmp_path / "run", Console(file=io.StringIO()))
    out = tmp_path / "p.csv"
    predict_run(run_dir, str(path), out, console=Console(file=io.StringIO()))
    frame = pd.read_csv(out)
    assert frame.columns[0] == "id" and frame["id"].tolist() == pd.read_csv(path)["id"].tolist()
    assert {"up", "up_probability"} <= set(frame.columns)
    # the id columns are allowed, not required: an input without them predicts as well
    bare = tmp_path / "bare.csv"
    pd.read_csv(path).drop(columns=["id"]).to_csv(bare, index=False)
    predict_run(run_dir, str(bare), tmp_path / "q.csv", console=Console(file=io.StringIO()))
    again = pd.read_csv(tmp_path / "q.csv")
    assert "id" not in again.columns and again["up"].tolist() == frame["up"].tolist()


def test_npz_split_arrays_must_hold_one_value_per_sample(tmp_path):
    path = tmp_path / "d.npz"
    x = np.random.default_rng(0).normal(size=(20, 5, 2)).astype(np.float32)
    np.savez(path, x=x, up=(x[:, 0, 0] > 0).astype(np.int64), split=np.array(["train"] * 19))
    with pytest.raises(ValueError, match=r"array 'split' has shape \(19,\); expected \(20,\)"):
        build_files(path, "x", TASKS, layout="sequence", split_column="split")


def test_split_values_must_be_lists(tmp_path):
    path = series_file(tmp_path, split=lambda t: np.where(t >= 45, "test", "train"))
    values = {"train": "train", "test": ["test"]}
    with pytest.raises(ValueError, match=r"split_values.train='train'; expected a list"):
        build_files(path, ["t"], TASKS, split_column="split", split_values=values)


def test_parquet_without_pyarrow_is_the_extra_named(tmp_path, monkeypatch):
    import sys

    from attnmtl.data.files import header

    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ValueError, match=r"reading Parquet needs pyarrow: pip install"):
        header(tmp_path / "x.parquet", "parquet")


def test_a_task_without_training_labels_gives_its_counts_per_split_and_the_fix(tmp_path):
    from attnmtl.run.build import build_data

    path = series_file(tmp_path, split=lambda t: np.where(t >= 45, "test", "train"))
    frame = pd.read_csv(path)
    frame["late"] = np.where(frame["split"] == "test", frame["up"], None)  # test rows only
    frame.to_csv(path, index=False)
    tasks = {"up": {"kind": "binary"}, "late": {"kind": "binary"}}
    data = {"name": "files", "path": str(path), "inputs": ["t"], "tasks": tasks}
    config = parse_config({"data": {**data, "split_column": "split", "id_columns": ["id"]}})
    message = (
        r"task\(s\) \['late'\] have no labelled training sample \(labelled rows: 'late': "
        r"train 0, val 0, test 15\); label some training rows or remove the task"
    )
    with pytest.raises(ValueError, match=message):
        build_data(config)
