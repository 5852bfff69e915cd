"""``attnmtl export``: one graph per run, an output per task, checked against PyTorch on
held-out inputs before it is kept; onnxruntime's outputs on new inputs (another batch size,
another sequence length) equal ``load_run(...).predict``'s, in natural units."""

import io

import numpy as np
import pandas as pd
import pytest
import torch
from rich.console import Console

from attnmtl.data.files import resolve_path
from attnmtl.pipeline import train_run
from attnmtl.run import export as export_module
from attnmtl.run import load_run
from attnmtl.run.config import load_config
from attnmtl.run.export import export_run

TINY = [
    "train.epochs=1",
    "train.report=false",
    "train.tensorboard=false",
    "train.progress=false",
]
MNIST = [*TINY, "data.num_train=256", "data.num_val=64", "data.num_test=300"]
RUNS = {
    "default": ("default", [*MNIST, "model.encoder_options={cell: gru, hidden_dim: 8}"]),
    "csv_example": ("csv_example", TINY),
    "transformer": (
        "default",
        [*MNIST, "model.encoder=transformer", "model.encoder_options={dim: 16, num_layers: 1}"],
    ),
}


def trained(tmp_path_factory, which):
    config, overrides = RUNS[which]
    run_dir = tmp_path_factory.mktemp(which) / "run"
    train_run(load_config(config, overrides), run_dir, Console(file=io.StringIO()))
    return run_dir


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    return trained(tmp_path_factory, "default")


def ort_outputs(path, inputs):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"inputs": inputs.numpy()}), strict=True))


def served(run, inputs, prepared):
    """What each output should hold: load_run's predict, reduced to the served values."""
    values = run.predict(inputs, prepared=prepared, attention=True)
    keys = {"binary": "probability", "regression": "value"}
    out = {t: values[t][keys.get(task.kind, "probabilities")] for t, task in run.tasks.items()}
    out.update({f"{t}_attention": values[t]["attention"] for t in run.tasks})
    return out


@pytest.mark.slow
@pytest.mark.parametrize("which", ["default", "csv_example", "transformer"])
def test_onnx_export_checks_itself_and_onnxruntime_matches_predict(
    tmp_path_factory, tmp_path, which
):
    pytest.importorskip("onnxruntime")
    run_dir = trained(tmp_path_factory, which)
    report = export_run(run_dir, "onnx", tmp_path / "m.onnx", attention=True)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # one file: no FILE.data beside
    run = load_run(run_dir)
    assert report["outputs"] == [*run.tasks, *(f"{t}_attention" for t in run.tasks)]
    assert report["checked_inputs"] > 3 and max(report["max_abs_diff"].values()) <= 1e-4
    print(which, report["max_abs_diff"])  # quoted in the closing note
    if which == "csv_example":  # raw CSV rows, in the file's units
        frame = pd.read_csv(resolve_path("attnmtl:wine_mt.csv"))
        inputs, prepared = (
            torch.tensor(
                frame[run.config.data.options()["inputs"]].to_numpy(), dtype=torch.float32
            ),
            False,
        )
    else:  # 7 test sequences, and for the transformer a shorter length too
        inputs, prepared = run.splits.test.inputs[:7], True
    expected = served(run, inputs, prepared)
    got = ort_outputs(tmp_path / "m.onnx", inputs)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value.numpy(), atol=1e-4, rtol=0)
    if which == "transformer":
        short = run.splits.test.inputs[:5, :30]
        got = ort_outputs(tmp_path / "m.onnx", short)
        for name, value in served(run, short, True).items():
            np.testing.assert_allclose(got[name], value.numpy(), atol=1e-4, rtol=0)


def test_torchscript_export_checks_itself_and_loads(default_run, tmp_path):
    report = export_run(default_run, "torchscript", tmp_path / "m.pt")
    assert max(report["max_abs_diff"].values()) <= 1e-4
    run = load_run(default_run)
    module = torch.jit.load(str(tmp_path / "m.pt"))
    inputs = run.splits.test.inputs[:9]  # another batch size than the traced one
    got = module(run.preprocessing.unprepare(inputs))
    want = served(run, inputs, True)
    for value, name in zip(got, run.tasks, strict=False):
        torch.testing.assert_close(value, want[name])


def test_export_refuses_in_one_line_and_keeps_nothing(default_run, tmp_path, monkeypatch):
    with pytest.raises(
        ValueError, match=r"^--format 'tflite'; expected one of: onnx, torchscript$"
    ):
        export_run(default_run, "tflite")
    (tmp_path / "there.pt").write_text("x")
    with pytest.raises(ValueError, match="already exists"):
        export_run(default_run, "torchscript", tmp_path / "there.pt")
    with pytest.raises(ValueError, match=r"^export check failed: output '\w+' differs"):
        export_run(default_run, "torchscript", tmp_path / "m.pt", tolerance=-1.0)
    assert not (tmp_path / "m.pt").exists() and len(list(tmp_path.iterdir())) == 1

    def broken(*args, **kwargs):
        raise RuntimeError("Unsupported: an operator\nwith a long trace")

    monkeypatch.setattr(torch.jit, "trace", broken)
    with pytest.raises(
        ValueError, match=r"cannot be exported to torchscript: Unsupported: an operator$"
    ):
        export_run(default_run, "torchscript", tmp_path / "m.pt")
    monkeypatch.setattr(export_module, "_installed", lambda name: name != "onnxruntime")
    with pytest.raises(ValueError, match=r"needs onnxruntime: pip install 'attnmtl\[export\]'"):
        export_run(default_run, "onnx", tmp_path / "m.onnx")
    assert len(list(tmp_path.iterdir())) == 1
