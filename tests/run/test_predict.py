"""``load_run(...).predict`` and ``attnmtl predict``: a run applied to new inputs gives the
predictions of the trained model's own forward pass (as ``eval`` runs it) on the same rows,
classes by their declared names, and regression values back in natural units."""

import io
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from rich.console import Console

from attnmtl.cli import main
from attnmtl.data.files import resolve_path
from attnmtl.pipeline import train_run
from attnmtl.run import load_run
from attnmtl.run.config import load_config
from attnmtl.run.predict import predict_run

CSV = resolve_path("attnmtl:wine_mt.csv")


def cli(argv, capsys):
    """(exit code, stderr) of ``attnmtl ARGV``."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code, capsys.readouterr().err


TINY = ["train.epochs=3", "train.report=false", "train.tensorboard=false", "train.progress=false"]


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory):
    config = load_config("csv_example", TINY)
    run_dir, _ = train_run(
        config, tmp_path_factory.mktemp("csv") / "run", Console(file=io.StringIO())
    )
    return run_dir


def test_predictions_match_the_models_forward_on_the_same_rows_in_natural_units(csv_run):
    run = load_run(csv_run)
    frame = pd.read_csv(CSV)
    inputs = torch.tensor(
        frame[run.config.data.options()["inputs"]].to_numpy(), dtype=torch.float32
    )
    got = run.predict(inputs)
    # the reference: the data set's own (standardised) rows through the model, as eval does
    info = run.splits.info["standardize"]
    prepared = (inputs - torch.tensor(info["mean"])) / torch.tensor(info["std"])
    with torch.no_grad():
        out = run.model(prepared)
    probabilities = torch.softmax(out.preds["cultivar"], -1)
    torch.testing.assert_close(got["cultivar"]["probabilities"], probabilities)
    assert torch.equal(got["cultivar"]["class"], probabilities.argmax(-1))
    torch.testing.assert_close(
        got["intense_color"]["probability"], torch.sigmoid(out.preds["intense_color"][:, 0])
    )
    stats = run.splits.info["standardize_targets"]["alcohol"]
    natural = out.preds["alcohol"][:, 0] * stats["std"][0] + stats["mean"][0]
    torch.testing.assert_close(got["alcohol"]["value"], natural)
    # natural units: % vol, where the wine's alcohol lies (11-15), not standard units
    assert 10 < float(got["alcohol"]["value"].mean()) < 16
    # the run's own test split, as the data set hands it over (prepared)
    test = run.splits.test
    again = run.predict(test.inputs, prepared=True)
    with torch.no_grad():
        direct = run.model(test.inputs)
    torch.testing.assert_close(
        again["cultivar"]["probabilities"], torch.softmax(direct.preds["cultivar"], -1)
    )


def test_attnmtl_predict_writes_one_row_per_input_in_csv_jsonl_and_parquet(
    csv_run, tmp_path, capsys
):
    run = load_run(csv_run)
    reference = run.predict(
        torch.tensor(
            pd.read_csv(CSV)[run.config.data.options()["inputs"]].to_numpy(), dtype=torch.float32
        )
    )
    for suffix in ("csv", "jsonl", "parquet"):
        out = tmp_path / f"p.{suffix}"
        argv = ["predict", str(csv_run), str(CSV), "--out", str(out), "--attention"]
        assert cli(argv, capsys) == (0, f"178 predictions: {out}\n")
        frame = {
            "csv": pd.read_csv,
            "parquet": pd.read_parquet,
            "jsonl": lambda p: pd.read_json(p, lines=True),
        }[suffix](out)
        assert len(frame) == 178
        names = ["class_0", "class_1", "class_2"]
        expected = [names[i] for i in reference["cultivar"]["class"].tolist()]
        assert frame["cultivar"].tolist() == expected
        assert {f"cultivar_p_{n}" for n in names} | {"intense_color_probability", "alcohol"} <= set(
            frame.columns
        )
        np.testing.assert_allclose(
            frame["alcohol"].to_numpy(), reference["alcohol"]["value"].numpy(), rtol=1e-5
        )
        attention = frame["cultivar_attention"][0]
        attention = json.loads(attention) if isinstance(attention, str) else list(attention)
        assert len(attention) == 1  # an MLP encoder's one step


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda f: f.drop(columns=["ash"]), r"no column 'ash' \(needed by inputs\)"),
        (lambda f: f.assign(extra=1.0), r"extra column\(s\) 'extra'"),
        (lambda f: f.assign(ash=["x", *f["ash"][1:]]), r"input column 'ash', line 2: 'x' is not a"),
    ],
)
def test_bad_input_files_are_one_line_exit_2_and_nothing_is_written(
    csv_run, tmp_path, capsys, edit, message
):
    bad = tmp_path / "bad.csv"
    edit(pd.read_csv(CSV)).to_csv(bad, index=False)
    out = tmp_path / "out.csv"
    code, err = cli(["predict", str(csv_run), str(bad), "--out", str(out)], capsys)
    assert code == 2
    err = err.strip()
    assert err.startswith("attnmtl: error: ") and len(err.splitlines()) == 1
    assert re.search(message, err), err
    assert not out.exists()


def test_an_unknown_output_suffix_and_an_existing_file_are_refused(csv_run, tmp_path):
    with pytest.raises(ValueError, match=r"unknown suffix '.txt'"):
        predict_run(csv_run, str(CSV), tmp_path / "p.txt")
    (tmp_path / "there.csv").write_text("x")
    with pytest.raises(ValueError, match="already exists"):
        predict_run(csv_run, str(CSV), tmp_path / "there.csv")


def test_float64_and_integer_inputs_are_cast_like_the_model(csv_run):
    run = load_run(csv_run)
    names = run.config.data.options()["inputs"]
    table = pd.read_csv(CSV)[names].to_numpy()
    want = run.predict(torch.tensor(table, dtype=torch.float32))
    got = run.predict(torch.from_numpy(table))  # float64, as numpy gives it
    torch.testing.assert_close(got["cultivar"]["probabilities"], want["cultivar"]["probabilities"])
    rounded = run.predict(torch.from_numpy(table.round().astype("int64")))  # integers
    assert rounded["alcohol"]["value"].dtype == torch.float32


def test_a_flattening_encoder_reads_only_its_training_length():
    from attnmtl.core.tasks import Task
    from attnmtl.models import create_model
    from attnmtl.run.export import any_length

    tasks = [Task("c", "multiclass", 3)]
    gru = create_model(
        "attention_mtl", tasks=tasks, input_shape=(12, 2), encoder_options={"hidden_dim": 8}
    )
    mlp = create_model("attention_mtl", tasks=tasks, input_shape=(12, 2), encoder="mlp")
    sample = (torch.randn(3, 12, 2),)
    assert any_length(gru.eval(), sample) and not any_length(mlp.eval(), sample)
