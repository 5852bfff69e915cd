"""A user's own files through the command line, with configs written from the README alone:
a table with a split column, two series as column blocks with a level shift in the test
period, and faulty files (every problem in one error). Issue 15's acceptance suite."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import Ridge

from attnmtl.cli import main
from attnmtl.data.files import build_files
from attnmtl.run.build import load_run

ROOT = Path(__file__).parents[1]
SERIES = ROOT / "src" / "attnmtl" / "configs" / "data" / "series_mt.csv"
QUIET = ["train.report=false", "train.tensorboard=false", "train.progress=false"]


def cli(argv, capsys):
    """(exit code, stdout, stderr) of ``attnmtl ARGV``."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())["tasks"]


def test_the_shipped_series_file_is_what_its_example_script_writes(tmp_path):
    script = ROOT / "examples" / "make_series_example.py"
    spec = importlib.util.spec_from_file_location("series", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.make_series().to_csv(tmp_path / "s.csv", index=False)
    assert (tmp_path / "s.csv").read_bytes() == SERIES.read_bytes()


def test_a_table_with_a_split_column_trains_through_the_cli(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = 240
    x = rng.normal(size=(n, 3)) * [1.0, 1000.0, 0.01]  # mixed units: standardize is on
    frame = pd.DataFrame(x, columns=["length_mm", "mass_g", "ratio"])
    frame.insert(0, "id", range(n))
    z = x / [1.0, 1000.0, 0.01]
    frame["kind"] = np.where(z[:, 0] + z[:, 1] > 0, "big", "small")
    frame["grade"] = np.digitize(z[:, 2], [-0.5, 0.5])
    frame["price"] = 300_000 + 50_000 * z[:, 1] + rng.normal(size=n) * 5_000
    frame.loc[rng.random(n) < 0.3, "grade"] = np.nan  # 30% unlabelled for this task
    frame["split"] = np.where(np.arange(n) < 180, "train", "test")
    path = tmp_path / "table.csv"
    frame.to_csv(path, index=False)
    config = tmp_path / "table.yaml"
    config.write_text(
        f"""name: table
data:
  name: files
  path: {path}
  inputs: [length_mm, mass_g, ratio]
  split_column: split
  id_columns: [id]
  tasks:
    kind: {{kind: binary, classes: [small, big]}}
    grade: {{kind: multiclass, size: 3}}
    price: {{kind: regression}}
train: {{epochs: 20, batch_size: 32}}
"""
    )
    code, _, err = cli(["train", "-c", str(config), "--out", str(tmp_path / "run"), *QUIET], capsys)
    assert code in (0, None), err
    scores = summary(tmp_path / "run")
    assert scores["kind"]["accuracy"] > 0.85 and scores["grade"]["accuracy"] > 0.6
    assert scores["price"]["r2"] > 0.8  # in natural units (dollars), not standard units
    assert 1_000 < scores["price"]["mae"] < 30_000


def ridge_and_last_value(frame):
    """Test MAE of predicting the last value, and of a ridge on the raw window."""
    train, test = frame[frame.split == "train"], frame[frame.split == "test"]
    columns = [c for c in frame if c[:2] in ("a_", "b_")]
    last = test[sorted(c for c in columns if c.startswith("a_"))[-1]]
    ridge = Ridge(alpha=1.0).fit(train[columns], train["next"]).predict(test[columns])
    return float(np.mean(np.abs(last - test["next"]))), float(np.mean(np.abs(ridge - test["next"])))


def test_the_time_series_recipe_beats_the_last_value_and_a_ridge_on_the_raw_window(
    tmp_path, capsys
):
    frame = pd.read_csv(SERIES)
    last_mae, ridge_mae = ridge_and_last_value(frame)
    run = tmp_path / "run"
    code, out, err = cli(["train", "-c", "timeseries", "--out", str(run), *QUIET], capsys)
    assert code in (0, None), err
    scores = summary(run)
    assert scores["next"]["mae"] < ridge_mae < last_mae, (scores["next"], ridge_mae, last_mae)
    assert scores["up"]["accuracy"] > 0.75 and scores["weekday"]["accuracy"] > 0.9
    assert "linear" in out and "this run" in out  # the baselines beside the run
    # without the window recipe, the level shift defeats the same model
    plain = tmp_path / "plain"
    overrides = ["data.window=null", "data.tasks.next.relative_to=null", *QUIET]
    code, _, err = cli(["train", "-c", "timeseries", "--out", str(plain), *overrides], capsys)
    assert code in (0, None), err
    assert summary(plain)["next"]["mae"] > 2 * ridge_mae
    # predict on the test rows' raw windows: natural units, the id columns copied
    test = frame[frame.split == "test"].drop(columns=["up", "weekday", "next", "split"])
    test.to_csv(tmp_path / "new.csv", index=False)
    code, _, err = cli(
        ["predict", str(run), str(tmp_path / "new.csv"), "--out", str(tmp_path / "p.csv")], capsys
    )
    assert code in (0, None), err
    predicted = pd.read_csv(tmp_path / "p.csv")
    assert list(predicted.columns[:2]) == ["id", "date"]
    truth = frame[frame.split == "test"]["next"].to_numpy()
    mae = float(np.mean(np.abs(predicted["next"].to_numpy() - truth)))
    assert mae == pytest.approx(scores["next"]["mae"], rel=1e-4)


FAULTY = """id,a,b,t,y,split
1,0.5,1,0,1.5,train
2,0.1,2,1,2.5,train
3,nan,3,0,0.5,train
4,0.7,4,1,1.0,train
5,0.2,inf,2,3.0,train
6,0.9,6,0,2.0,test
7,0.3,7,5,1.0,test
8,0.4,8,1,0.0,test
"""


def test_a_faulty_file_shows_every_problem_at_once_with_its_line_and_id(tmp_path, capsys):
    path = tmp_path / "faulty.csv"
    path.write_text(FAULTY)
    config = tmp_path / "faulty.yaml"
    config.write_text(
        f"""data:
  name: files
  path: {path}
  inputs: [a, b]
  split_column: split
  id_columns: [id]
  tasks:
    t: {{kind: binary}}
    y: {{kind: regression}}
"""
    )
    out = tmp_path / "run"
    code, _, err = cli(["train", "-c", str(config), "--out", str(out)], capsys)
    assert code == 2 and not out.exists()
    lines = err.strip().splitlines()
    assert lines[0] == "attnmtl: error: 4 problems in the data:"
    assert lines[1].endswith("input column 'a', line 4 (id 3): 'nan' is not a finite number")
    assert lines[2].endswith("input column 'b', line 6 (id 5): 'inf' is not a finite number")
    assert lines[3].endswith("task 't', column 't', line 6 (id 5): label 2 is not 0 or 1")
    assert lines[4].endswith("task 't', column 't', line 8 (id 7): label 5 is not 0 or 1")
    assert len(lines) == 5


def test_problems_beyond_the_cap_are_counted_per_column(tmp_path):
    rows = "".join(f"{i},x,{i % 2}\n" for i in range(30))
    path = tmp_path / "many.csv"
    path.write_text("id,a,t\n" + rows)
    with pytest.raises(ValueError) as err:
        build_files(path, ["a"], {"t": {"kind": "binary"}}, id_columns=["id"])
    lines = str(err.value).splitlines()
    assert lines[0] == "30 problems in the data:" and len(lines) == 22
    assert lines[1].endswith("input column 'a', line 2 (id 0): 'x' is not a finite number")
    assert lines[-1] == f"  ... and 10 more (in all: {path} column 'a' 30)"


def test_an_inferred_class_set_and_unscaled_inputs_are_noted(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = 150
    frame = pd.DataFrame({"mm": rng.normal(size=n) * 1e4, "flag": rng.integers(0, 2, size=n)})
    frame["species"] = rng.integers(0, 3, size=n)
    frame.loc[17, "species"] = 3  # a stray label
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    tasks = {"species": {"kind": "multiclass"}}
    splits = build_files(path, ["mm", "flag"], tasks, standardize=False)
    assert splits.info["notes"] == [
        "species: 4 classes {0,1,2,3} inferred from its labels; class 3 has 1 row (declare "
        "size or classes to fix the set)",
        splits.info["notes"][1],
    ]
    assert splits.info["notes"][1].startswith(
        "standardize is off and the input features' scales differ by"
    )
    config = tmp_path / "c.yaml"
    config.write_text(
        f"data: {{name: files, path: {path}, inputs: [mm, flag], tasks: {{species: "
        "{kind: multiclass}}}\ntrain: {epochs: 1}\n"
    )
    code, _, err = cli(["train", "-c", str(config), "--out", str(tmp_path / "r"), *QUIET], capsys)
    assert code in (0, None), err
    assert "note: species: 4 classes {0,1,2,3}" in " ".join(err.split())


def test_a_config_without_a_model_trains_a_table_with_an_mlp(tmp_path, capsys):
    path = tmp_path / "d.csv"
    pd.DataFrame({"a": np.arange(40.0), "t": np.arange(40) % 2}).to_csv(path, index=False)
    config = tmp_path / "c.yaml"
    config.write_text(
        f"data: {{name: files, path: {path}, inputs: [a], tasks: {{t: {{kind: binary}}}}}}\n"
        "train: {epochs: 1}\n"
    )
    code, _, err = cli(["train", "-c", str(config), "--out", str(tmp_path / "r"), *QUIET], capsys)
    assert code in (0, None), err
    assert load_run(tmp_path / "r").model.encoder.kind == "mlp"


def test_a_missing_section_names_what_is_missing(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("data: {name: files, path: x.csv}\n")
    code, _, err = cli(["train", "-c", str(config), "--out", str(tmp_path / "r")], capsys)
    assert code == 2
    assert err.strip() == (
        "attnmtl: error: data: data.inputs, data.tasks missing; build_files needs inputs, "
        "tasks (see `attnmtl list -v`)"
    )


def test_a_first_step_loss_1000_times_another_is_warned_of(tmp_path, capsys):
    path = tmp_path / "d.csv"
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=60), "t": rng.integers(0, 2, size=60)})
    frame["price"] = 3e5 + 1e4 * frame["a"]
    frame.to_csv(path, index=False)
    config = tmp_path / "c.yaml"
    config.write_text(
        f"data: {{name: files, path: {path}, inputs: [a], standardize_targets: false, "
        "tasks: {t: {kind: binary}, price: {kind: regression}}}\ntrain: {epochs: 1}\n"
    )
    code, _, err = cli(["train", "-c", str(config), "--out", str(tmp_path / "r"), *QUIET], capsys)
    assert code in (0, None), err
    text = " ".join(err.split())
    assert "warning: at the first step task 'price' has loss" in text
    assert "standardise its targets (data.standardize_targets)" in text
    assert text.count("at the first step") == 1


def test_list_verbose_prints_each_components_options(capsys):
    for what, name, option in [
        ("datasets", "files", "split_column"),
        ("encoders", "rnn", "hidden_dim"),
        ("models", "attention_mtl", "encoder"),
        ("weightings", "cagrad", "c"),
    ]:
        code, out, _ = cli(["list", what, "-v"], capsys)
        assert code in (0, None)
        block = out.split(f"\n{name}")[1] if not out.startswith(name) else out[len(name) :]
        rows = [line.split() for line in block.splitlines() if line.strip()]
        assert any(row[0] == option for row in rows), (what, block[:500])
    code, out, _ = cli(["list", "encoders", "-v"], capsys)
    rnn = out.split("\nrnn")[1].split("\ntransformer")[0]
    assert any(line.split()[:3] == ["hidden_dim", "int", "64"] for line in rnn.splitlines())


@pytest.mark.slow
def test_a_window_run_exports_to_onnx_with_its_transform_and_anchors(tmp_path, capsys):
    import onnxruntime

    from attnmtl.run.export import export_run

    run = tmp_path / "run"
    overrides = ["train.epochs=2", "train.baselines=false", *QUIET]
    code, _, err = cli(["train", "-c", "timeseries", "--out", str(run), *overrides], capsys)
    assert code in (0, None), err
    checked = export_run(run, "onnx")
    assert max(checked["max_abs_diff"].values()) < 1e-4
    frame = pd.read_csv(SERIES)
    test = frame[frame.split == "test"]
    windows = np.stack([test.filter(like="a_t"), test.filter(like="b_t")], -1).astype(np.float32)
    session = onnxruntime.InferenceSession(checked["path"])
    outputs = dict(zip(checked["outputs"], session.run(None, {"inputs": windows}), strict=True))
    loaded = load_run(run)
    expected = loaded.predict(torch.from_numpy(windows))["next"]["value"].numpy()
    np.testing.assert_allclose(outputs["next"], expected, atol=1e-4)
    # in natural units: near the series' own level, far from the training mean
    assert np.mean(np.abs(outputs["next"] - test["next"].to_numpy())) < 1.0


def test_the_readme_time_series_recipe_is_the_shipped_config():
    import yaml

    readme = (ROOT / "README.md").read_text()
    block = readme.split("# timeseries recipe")[1].split("\n", 1)[1].split("```")[0]
    shipped = yaml.safe_load((ROOT / "src/attnmtl/configs/timeseries.yaml").read_text())
    assert yaml.safe_load(block)["data"] == shipped["data"]
