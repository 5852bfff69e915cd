"""User data files (CSV, Parquet, NPZ): round trips, missing labels, sentinels, classes, errors."""

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from attnmtl.core.tasks import Task
from attnmtl.data import create_dataset
from attnmtl.data.files import build_files as build_scaled


def build_files(*args, **kwargs):
    """The files data set with raw inputs and targets (scaling is on by default)."""
    return build_scaled(*args, **{"standardize": False, "standardize_targets": False, **kwargs})


EXAMPLE = Path(__file__).parents[2] / "examples" / "make_csv_example.py"
SHIPPED = Path(__file__).parents[2] / "src" / "attnmtl" / "configs" / "data" / "wine_mt.csv"
WINE_INPUTS = [
    "malic_acid",
    "ash",
    "alcalinity_of_ash",
    "magnesium",
    "total_phenols",
    "flavanoids",
    "nonflavanoid_phenols",
    "proanthocyanins",
    "hue",
    "od280_od315",
    "proline",
]
WINE_TASKS = {
    "cultivar": {"kind": "multiclass", "classes": ["class_0", "class_1", "class_2"]},
    "intense_color": {"kind": "binary"},
    "alcohol": {"kind": "regression"},
}
TASKS = {"digit": {"kind": "multiclass"}, "flag": {"kind": "binary"}, "y": {"kind": "regression"}}


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def three_files(tmp_path: Path, text: str, suffix: str = ".csv") -> dict[str, Path]:
    """The same CSV text as train, val and test files (no random split)."""
    return {
        key: write_csv(tmp_path / f"{key}{suffix}", text)
        for key in ("path", "val_path", "test_path")
    }


CSV = "a,b,digit,flag,y\n0.5,1,2,1,3.25\n-1,2e3,,0,\n7,0,0,,-0.5\n"


def test_csv_round_trip_with_missing_cells(tmp_path):
    splits = build_files(inputs=["a", "b"], tasks=TASKS, **three_files(tmp_path, CSV))
    data = splits.test
    assert data.layout == "table"
    assert data.inputs.dtype == torch.float32
    assert torch.equal(data.inputs, torch.tensor([[0.5, 1.0], [-1.0, 2000.0], [7.0, 0.0]]))
    assert splits.tasks == {
        "digit": Task("digit", "multiclass", 3),  # inferred: largest label 2, plus 1
        "flag": Task("flag", "binary"),
        "y": Task("y", "regression"),
    }
    assert data.label_mask["digit"].tolist() == [True, False, True]
    assert data.label_mask["flag"].tolist() == [True, True, False]
    assert data.label_mask["y"].tolist() == [True, False, True]
    assert data.labels["digit"].tolist() == [2, 0, 0]  # 0 filler on the unlabelled row
    assert data.labels["digit"].dtype == torch.int64
    assert data.labels["flag"].tolist() == [1.0, 0.0, 0.0]
    assert data.labels["y"].tolist() == [3.25, 0.0, -0.5]
    assert splits.info["num_samples"] == {"train": 3, "val": 3, "test": 3}


def test_parquet_round_trip_with_typed_columns(tmp_path):
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame(
        {
            "a": [1.0, 2.0, 3.0, 4.0],
            "n": pd.array([5, 6, 7, 8], dtype="Int64"),
            "flag": pd.array([True, None, False, True], dtype="boolean"),
            "kind": ["cat", "dog", None, "cat"],
            "y": [0.1, np.nan, 0.3, np.nan],
        }
    )
    for key in ("train", "val", "test"):
        frame.to_parquet(tmp_path / f"{key}.parquet")
    tasks = {
        "flag": {"kind": "binary"},
        "kind": {"kind": "multiclass", "classes": ["dog", "cat"]},
        "y": {"kind": "regression"},
    }
    splits = build_files(
        tmp_path / "train.parquet",
        ["a", "n"],
        tasks,
        val_path=tmp_path / "val.parquet",
        test_path=tmp_path / "test.parquet",
    )
    data = splits.train
    assert data.inputs.tolist() == [[1, 5], [2, 6], [3, 7], [4, 8]]
    assert data.label_mask["flag"].tolist() == [True, False, True, True]
    assert data.labels["flag"].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert data.labels["kind"].tolist() == [1, 0, 0, 1]  # class ids in the declared order
    assert data.label_mask["kind"].tolist() == [True, True, False, True]
    assert data.label_mask["y"].tolist() == [True, False, True, False]
    assert splits.tasks["kind"].size == 2


def test_npz_round_trip_sequence_with_lengths(tmp_path):
    x = np.arange(4 * 5, dtype=np.float64).reshape(4, 5)  # (N, T): one feature per step
    arrays = {
        "x": x,
        "len": np.array([5, 3, 1, 4]),
        "colour": np.array(["red", "", "blue", "red"]),
        "y": np.array([[1.0, 2.0], [np.nan, np.nan], [3.0, 4.0], [5.0, 6.0]]),
        "tags": np.array([[1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]]),
    }
    for key in ("train", "val", "test"):
        np.savez(tmp_path / f"{key}.npz", **arrays)
    tasks = {
        "colour": {"kind": "multiclass", "classes": ["red", "blue"]},
        "y": {"kind": "regression"},
        "tags": {"kind": "multilabel"},
    }
    splits = build_files(
        str(tmp_path / "train.npz"),
        "x",
        tasks,
        layout="sequence",
        lengths="len",
        val_path=str(tmp_path / "val.npz"),
        test_path=str(tmp_path / "test.npz"),
    )
    data = splits.val
    assert data.inputs.shape == (4, 5, 1)
    assert torch.equal(data.inputs[..., 0], torch.as_tensor(x, dtype=torch.float32))
    assert data.lengths.tolist() == [5, 3, 1, 4]
    assert data.labels["colour"].tolist() == [0, 0, 1, 0]
    assert data.label_mask["colour"].tolist() == [True, False, True, True]
    assert splits.tasks["y"] == Task("y", "regression", 2)
    assert data.labels["y"].tolist() == [[1, 2], [0, 0], [3, 4], [5, 6]]
    assert data.label_mask["y"].tolist() == [True, False, True, True]
    assert splits.tasks["tags"].size == 3
    assert data.label_mask["tags"].all()  # an all-zero multilabel row is labelled, not missing


def test_npz_image_gains_a_channel_axis(tmp_path):
    np.savez(tmp_path / "d.npz", img=np.ones((6, 4, 4)), t=np.arange(6) % 2)
    splits = build_files(
        tmp_path / "d.npz",
        "img",
        {"t": {"kind": "binary"}},
        layout="image",
        val_fraction=0.2,
        test_fraction=0.2,
    )
    assert splits.train.input_shape == (1, 4, 4)


def test_sentinels_mark_unlabelled_samples(tmp_path):
    text = "a,digit,y\n1,-1,?\n2,1, 2.5\n3,0,?\n4,-1,1\n"
    tasks = {
        "digit": {"kind": "multiclass", "sentinel": -1},
        "y": {"kind": "regression", "sentinel": "?"},
    }
    data = build_files(inputs="a", tasks=tasks, **three_files(tmp_path, text)).test
    assert data.label_mask["digit"].tolist() == [False, True, True, False]
    assert data.labels["digit"].tolist() == [0, 1, 0, 0]
    assert data.label_mask["y"].tolist() == [False, True, False, True]
    assert data.labels["y"].tolist() == [0.0, 2.5, 0.0, 1.0]


def test_string_classes_and_binary_class_names(tmp_path):
    text = "a,animal,answer\n1,dog,yes\n2,cat,no\n3,,yes\n4,bird,\n5,unknown,no\n"
    tasks = {
        "animal": {"kind": "multiclass", "classes": ["cat", "dog", "bird"], "sentinel": "unknown"},
        "answer": {"kind": "binary", "classes": ["no", "yes"]},
    }
    splits = build_files(inputs=["a"], tasks=tasks, **three_files(tmp_path, text))
    data = splits.train
    assert splits.tasks["animal"].size == 3
    assert data.labels["animal"].tolist() == [1, 0, 0, 2, 0]
    assert data.label_mask["animal"].tolist() == [True, True, False, True, False]
    assert data.labels["answer"].tolist() == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert data.label_mask["answer"].tolist() == [True, True, True, False, True]


def test_nan_filler_in_the_raw_file_becomes_a_finite_masked_label(tmp_path):
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": [0.5, np.nan, 2.0]})
    frame.to_parquet(tmp_path / "d.parquet")
    text = "a,y\n1,0.5\n2,NaN\n3,2.0\n"  # NaN spelled out in a CSV
    write_csv(tmp_path / "d.csv", text)
    for file in ("d.parquet", "d.csv"):
        files = {k: tmp_path / file for k in ("path", "val_path", "test_path")}
        data = build_files(inputs=["a"], tasks={"y": {"kind": "regression"}}, **files).train
        labels, mask = data.labels["y"], data.label_mask["y"]
        assert bool(torch.isfinite(labels).all())
        assert mask.tolist() == [True, False, True]
        pred = torch.tensor([[1.5], [100.0], [2.0]])
        loss = data.tasks["y"].compute_loss(pred[mask], labels[mask])
        assert loss.item() == pytest.approx(0.5)  # ((1.5 - 0.5)² + 0) / 2


def test_random_split_is_seeded_disjoint_and_complete(tmp_path):
    rows = "\n".join(f"{i},{i % 2}" for i in range(40))
    path = write_csv(tmp_path / "d.csv", "a,t\n" + rows + "\n")
    tasks = {"t": {"kind": "binary"}}

    def ids(seed):
        splits = create_dataset(
            "files",
            path=str(path),
            inputs=["a"],
            tasks=tasks,
            val_fraction=0.25,
            test_fraction=0.1,
            seed=seed,
            standardize=False,
        )
        return {k: v.inputs[:, 0].long().tolist() for k, v in splits.items()}

    first = ids(0)
    assert [len(first[k]) for k in ("train", "val", "test")] == [26, 10, 4]
    assert sorted(first["train"] + first["val"] + first["test"]) == list(range(40))
    assert ids(0) == first
    assert ids(1) != first


def test_standardize_uses_train_statistics_and_keeps_padding(tmp_path):
    x = np.array([[[1.0], [3.0], [99.0]], [[5.0], [7.0], [9.0]]])  # (N, T, F); 99 is padding
    np.savez(tmp_path / "tr.npz", x=x, len=np.array([2, 3]), t=np.array([0, 1]))
    np.savez(
        tmp_path / "ev.npz", x=np.full((2, 3, 1), 6.0), len=np.array([1, 3]), t=np.array([1, 0])
    )
    splits = build_files(
        tmp_path / "tr.npz",
        "x",
        {"t": {"kind": "binary"}},
        layout="sequence",
        lengths="len",
        val_path=tmp_path / "ev.npz",
        test_path=tmp_path / "ev.npz",
        standardize=True,
    )
    mean = (1 + 3 + 5 + 7 + 9) / 5
    std = math.sqrt(sum((v - mean) ** 2 for v in (1, 3, 5, 7, 9)) / 5)
    assert splits.info["standardize"]["mean"] == pytest.approx([mean])
    assert splits.train.inputs[0, :, 0].tolist() == pytest.approx(
        [(1 - mean) / std, (3 - mean) / std, 99.0]
    )
    assert splits.val.inputs[0, :, 0].tolist() == pytest.approx([(6 - mean) / std, 6.0, 6.0])


def test_standardize_targets_scales_labelled_regression_values_only(tmp_path):
    text = "a,y,z,c\n1,1,0,1\n2,3,,0\n3,,2,1\n4,5,4,0\n"
    tasks = {"y": {"kind": "regression"}, "c": {"kind": "binary"}, "z": {"kind": "regression"}}
    splits = build_files(
        inputs=["a"], tasks=tasks, standardize_targets=True, **three_files(tmp_path, text)
    )
    std = math.sqrt(8 / 3)  # of 1, 3, 5 around 3
    assert splits.info["standardize_targets"]["y"] == {"mean": [3.0], "std": [pytest.approx(std)]}
    assert splits.test.labels["y"].tolist() == pytest.approx([-2 / std, 0.0, 0.0, 2 / std])
    assert splits.test.label_mask["y"].tolist() == [True, True, False, True]
    assert splits.test.labels["c"].tolist() == [1.0, 0.0, 1.0, 0.0]  # not regression: unchanged
    constant = "a,y\n1,2\n2,2\n"
    with pytest.raises(ValueError, match=r"target 'y' is constant"):
        build_csv(tmp_path, constant, tasks={"y": {"kind": "regression"}}, standardize_targets=True)


# ----------------------------------------------------------------------------- errors


def build_csv(tmp_path, text, inputs=("a",), tasks=None, **kwargs):
    files = three_files(tmp_path, text)
    return build_files(
        inputs=list(inputs), tasks=tasks or {"t": {"kind": "binary"}}, **files, **kwargs
    )


@pytest.mark.parametrize(
    ("text", "inputs", "tasks", "message"),
    [
        ("a,t\n1,0\nabc,1\n", ["a"], None, r"input column 'a', line 3: 'abc' is not a finite"),
        ("a,t\n1,0\n,1\n", ["a"], None, r"line 3: an empty or NaN cell"),
        ("a,t\n1,0\ninf,1\n", ["a"], None, r"'inf' is not a finite number"),
        ("a,t\n1,0\n2,2\n", ["a"], None, r"column 't', line 3: label 2 is not 0 or 1"),
        (
            "a,t\n1,0\n2,5\n",
            ["a"],
            {"t": {"kind": "multiclass", "size": 3}},
            r"label 5 is not a class id in \[0, 2\]",
        ),
        ("a,t\n1,0\n2,1.5\n", ["a"], {"t": {"kind": "multiclass"}}, r"label 1.5 is not a class id"),
        ("a,t\n1,cat\n", ["a"], None, r"label 'cat' is not a number"),
        (
            "a,t\n1,cow\n",
            ["a"],
            {"t": {"kind": "multiclass", "classes": ["cat", "dog"]}},
            r"'cow' is not one of the declared classes \['cat', 'dog'\]",
        ),
        ("a,b\n1,0\n", ["a"], None, r"no column 't' \(needed by task 't'\); available: a, b"),
        ("a,zz\n1,0\n", ["a", "q"], None, r"no column 'q' \(needed by inputs\); available: a, zz"),
        ("a,a,t\n1,2,0\n", ["a"], None, r"duplicate column name 'a'"),
        ("a,t\n", ["a"], None, r"empty table \(no data rows\)"),
        ("a,t\n1,0\n2,1,7\n", ["a"], None, r"cannot parse as CSV \(.*line 3, saw 3"),
        ("a,t\n1,0,5\n", ["a"], None, r"cannot parse as CSV \(Length of header"),
        ("", ["a"], None, r"empty table \(no header row\)"),
        ("a,t\n1,\n2,\n", ["a"], None, r"task 't' has no labelled sample"),
        ("a,t\n1,0\n", ["t"], None, r"column 't' is both an input and the label of task 't'"),
        (
            "a,u,v\n1,0,\n",
            ["a"],
            {"t": {"kind": "multilabel", "column": ["u", "v"]}},
            r"line 2: some of its 2 label cells are empty",
        ),
        ("a,t\n1,0\n", ["a"], {"t": {"kind": "binary", "weight": 2}}, r"unknown option 'weight'"),
        ("a,t\n1,0\n", ["a"], {"t": {"kind": "ordinal"}}, r"kind='ordinal'"),
        (
            "a,t\n1,0\n",
            ["a"],
            {"t": {"kind": "binary", "classes": ["x", "y", "z"]}},
            r"3 classes \['x', 'y', 'z'\]; expected 2",
        ),
        (
            "a,t\n1,0\n",
            ["a"],
            {"t": {"kind": "regression", "size": 2}},
            r"size=2 but its labels have 1 columns",
        ),
    ],
)
def test_bad_csv_input_raises_one_line_value_error(tmp_path, text, inputs, tasks, message):
    with pytest.raises(ValueError, match=message) as err:
        build_csv(tmp_path, text, inputs, tasks)
    lines = str(err.value).splitlines()
    # one line, or — a cell problem, in each of the three files — one line per problem
    if len(lines) > 1:
        assert lines[0] == "3 problems in the data:"
        assert [line.split(":")[0].strip()[-8:] for line in lines[1:]] == [
            "path.csv",
            "path.csv",
            "path.csv",
        ]


def test_bad_files_and_options_raise_value_errors(tmp_path):
    tasks = {"t": {"kind": "binary"}}
    with pytest.raises(ValueError, match=r"data file not found: '.*nowhere\.csv'"):
        build_files(tmp_path / "nowhere.csv", ["a"], tasks)
    path = write_csv(tmp_path / "d.txt", "a,t\n1,0\n")
    with pytest.raises(ValueError, match=r"cannot tell the format of '.*d\.txt'"):
        build_files(path, ["a"], tasks)
    with pytest.raises(ValueError, match=r"format='xlsx'"):
        build_files(path, ["a"], tasks, format="xlsx")
    with pytest.raises(ValueError, match=r"layout must be 'table' \(got 'sequence'\)"):
        build_files(path, ["a"], tasks, format="csv", layout="sequence")
    with pytest.raises(ValueError, match=r"val_fraction=0\.0; expected a share in \(0, 1\)"):
        build_files(path, ["a"], tasks, format="csv", val_fraction=0.0)
    with pytest.raises(ValueError, match=r"1 rows are too few"):
        build_files(path, ["a"], tasks, format="csv")
    with pytest.raises(
        ValueError, match=r"no shipped data file 'attnmtl:nope\.csv'; shipped: .*wine_mt\.csv"
    ):
        build_files("attnmtl:nope.csv", ["a"], tasks)


def test_unreadable_files_raise_value_errors(tmp_path):
    tasks = {"t": {"kind": "binary"}}
    (tmp_path / "d.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"d\.npz: cannot read as NPZ"):
        build_files(tmp_path / "d.npz", "x", tasks)
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(ValueError, match=r"one\.npy: holds one array"):
        build_files(tmp_path / "one.npy", "x", tasks, format="npz")
    (tmp_path / "d.csv").write_bytes(b"a,t\n\xe9,1\n")
    with pytest.raises(ValueError, match=r"d\.csv: cannot parse as CSV \('utf-8' codec"):
        build_files(tmp_path / "d.csv", "a", tasks)
    pytest.importorskip("pyarrow")
    (tmp_path / "d.parquet").write_bytes(b"PAR1 not parquet")
    with pytest.raises(ValueError, match=r"d\.parquet: cannot read as Parquet"):
        build_files(tmp_path / "d.parquet", "a", tasks)


def test_parquet_without_pyarrow_names_the_extra(tmp_path, monkeypatch):
    path = tmp_path / "d.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ValueError, match=r"pip install 'attnmtl\[parquet\]'"):
        build_files(path, ["a"], {"t": {"kind": "binary"}})


def test_duplicate_parquet_column_is_rejected(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.Table.from_arrays([pa.array([1.0]), pa.array([2.0]), pa.array([0])], ["a", "a", "t"])
    pq.write_table(table, tmp_path / "d.parquet")
    with pytest.raises(ValueError, match=r"duplicate column name 'a'"):
        build_files(tmp_path / "d.parquet", ["a"], {"t": {"kind": "binary"}})


@pytest.mark.parametrize(
    ("arrays", "kwargs", "message"),
    [
        (
            {"x": np.zeros((4, 2)), "t": np.zeros(3)},
            {},
            r"array 't' has shape \(3,\); expected 4 rows",
        ),
        ({"x": np.zeros((4, 2))}, {}, r"no array 't' \(needed by task 't'\); available: x"),
        ({"x": np.array([[0.0, np.nan]] * 4), "t": np.zeros(4)}, {}, r"holds nan at \(0, 1\)"),
        ({"x": np.zeros((4, 2)), "t": np.array([0, 1, 0, 3])}, {}, r"row 3: label 3 is not 0 or 1"),
        ({"x": np.zeros((4, 2, 3)), "t": np.zeros(4)}, {}, r"layout 'table' expects 2 axes"),
        (
            {"x": np.zeros((4, 2, 1)), "t": np.zeros(4), "n": np.array([1, 2, 3, 2])},
            {"layout": "sequence", "lengths": "n"},
            r"row 2: length 3 is outside \[1, 2\]",
        ),
    ],
)
def test_bad_npz_raises_one_line_value_error(tmp_path, arrays, kwargs, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(ValueError, match=message) as err:
        build_files(tmp_path / "d.npz", "x", {"t": {"kind": "binary"}}, **kwargs)
    assert "\n" not in str(err.value)


def test_npz_object_arrays_are_refused_without_unpickling(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 1)), t=np.array([0, {"a": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"array 't' holds Python objects"):
        build_files(tmp_path / "d.npz", "x", {"t": {"kind": "binary"}})


# ------------------------------------------------------------------ the shipped example


@pytest.mark.slow  # imports scikit-learn's datasets (about 2 s)
def test_shipped_example_is_what_its_script_writes():
    spec = importlib.util.spec_from_file_location("make_csv_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = module.make_table().to_csv(index=False, lineterminator="\n")
    assert text == SHIPPED.read_text()
    assert list(module.INPUTS) == WINE_INPUTS


def test_shipped_example_loads_with_its_declarations():
    assert SHIPPED.stat().st_size < 40_000
    splits = build_files("attnmtl:wine_mt.csv", WINE_INPUTS, WINE_TASKS)
    assert sum(splits.info["num_samples"].values()) == 178
    assert splits.tasks["cultivar"] == Task("cultivar", "multiclass", 3)
    unlabelled = {name: 0 for name in WINE_TASKS}
    for _, data in splits.items():
        for name in WINE_TASKS:
            unlabelled[name] += int((~data.label_mask[name]).sum())
        labelled = torch.stack(list(data.label_mask.values()), 1)  # (N, K)
        assert bool(labelled.any(1).all())  # no row lost every label
    assert unlabelled == {name: 53 for name in WINE_TASKS}  # 30% of 178


def test_one_task_per_sample_on_partly_labelled_rows():
    whole = build_files("attnmtl:wine_mt.csv", WINE_INPUTS, WINE_TASKS).train
    labelled = torch.stack([whole.label_mask[k] for k in WINE_TASKS], 1)  # (N, K)
    kept = whole.one_task_per_sample(seed=5)
    one = torch.stack([kept.label_mask[k] for k in WINE_TASKS], 1)
    assert bool((one.sum(1) == 1).all())
    assert bool((one <= labelled).all())  # only a task the sample was labelled for
    shares = one.float().mean(0)
    assert bool(((shares > 0.22) & (shares < 0.45)).all()), shares  # about a third each
    again = whole.one_task_per_sample(seed=5)
    other = whole.one_task_per_sample(seed=6)
    assert all(torch.equal(again.label_mask[k], kept.label_mask[k]) for k in WINE_TASKS)
    assert not all(torch.equal(other.label_mask[k], kept.label_mask[k]) for k in WINE_TASKS)


def test_a_yaml_data_section_passes_the_config_checks():
    import yaml

    from attnmtl.run.config import check_arguments

    section = yaml.safe_load(
        """
        path: attnmtl:wine_mt.csv
        inputs: [ash, hue, proline]
        tasks:
          cultivar: {kind: multiclass, classes: [class_0, class_1, class_2]}
          alcohol: {kind: regression, loss: huber}
        standardize: true
        """
    )
    kwargs = check_arguments(build_scaled, section, "data", ())
    splits = build_files(**kwargs)
    assert splits.train.input_shape == (3,)
    assert splits.tasks["alcohol"] == Task("alcohol", "regression", 1, "huber")
    with pytest.raises(ValueError, match=r"data\.seed"):
        check_arguments(build_scaled, {**section, "seed": "x"}, "data", ())


def test_inputs_and_regression_targets_are_standardised_by_default(tmp_path):
    rows = "".join(f"{i},{1000 * i},{i % 2},{2.5 * i}\n" for i in range(20))
    path = write_csv(tmp_path / "d.csv", "a,b,t,y\n" + rows)
    tasks = {"t": {"kind": "binary"}, "y": {"kind": "regression"}}
    splits = build_scaled(path, ["a", "b"], tasks, seed=0)
    assert set(splits.info) >= {"standardize", "standardize_targets"}
    x = splits.train.inputs
    assert torch.allclose(x.mean(0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(x.std(0, correction=0), torch.ones(2), atol=1e-5)
    assert "notes" not in splits.info  # scaled inputs need no note
