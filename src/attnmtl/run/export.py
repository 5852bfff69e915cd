"""``attnmtl export``: a finished run as one ONNX (or TorchScript) graph for serving, which
checks itself before it is kept.

Axes: B batch, T steps, C classes / outputs.

The graph (:class:`ServingModel`) takes raw inputs as the run's files hold them (the run's
input standardisation is inside it; ``lengths`` too when the run's sequences are padded) and
has one output per task — binary: P(class 1) (B,); multiclass: class probabilities (B, C);
multilabel: label probabilities (B, C); regression: values in natural units (B,) or (B, C) —
and, with ``attention``, one ``TASK_attention`` output per task. The batch axis is dynamic, and
so is the step axis of sequences.

The export is written to a temporary file and run — the ONNX file under onnxruntime, the
traced TorchScript module that was saved (attnmtl never calls ``torch.jit.load``, which
unpickles) — on up to 256 held-out test inputs in a batch size other than the one traced;
each output must match PyTorch's to ``tolerance`` (max absolute difference, 1e-4 by default),
or nothing is kept. ONNX needs the ``export`` extra
(``pip install 'attnmtl[export]'``: onnx, onnxruntime, onnxscript).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attnmtl.core.tasks import Task
from attnmtl.run.build import CHECKPOINTS, load_run
from attnmtl.run.predictor import Preprocessing, postprocess

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
EXPORT_EXTRA = "pip install 'attnmtl[export]'"
CHECKED = 256  # held-out inputs the export is checked on


class ServingModel(nn.Module):
    """Raw inputs → every task's probabilities or natural-unit values (see the module)."""

    def __init__(
        self,
        model: nn.Module,
        tasks: Mapping[str, Task],
        preprocessing: Preprocessing,
        attention: bool = False,
    ) -> None:
        super().__init__()
        self.model, self.tasks, self.preprocessing = model, dict(tasks), preprocessing
        self.attention = attention
        self.output_names = list(self.tasks) + (
            [f"{t}_attention" for t in self.tasks] if attention else []
        )

    def forward(self, inputs: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, ...]:
        output = self.model(self.preprocessing.prepare(inputs, lengths), lengths)
        anchors = self.preprocessing.anchors(inputs, lengths)
        outs = []
        for name, task in self.tasks.items():
            values = postprocess(
                task,
                output.preds[name],
                self.preprocessing.target_stats.get(name),
                anchors.get(name),
            )
            key = {"binary": "probability", "regression": "value"}.get(task.kind, "probabilities")
            outs.append(values[key])
        if self.attention:
            missing = [t for t in self.tasks if t not in output.attention]
            if missing:
                raise ValueError(f"the model returns no attention for task(s) {missing}")
            outs += [output.attention[t] for t in self.tasks]
        return tuple(outs)


def export_run(
    run_dir: Path,
    format: str = "onnx",
    out: Path | None = None,
    checkpoint: str = "best",
    attention: bool = False,
    tolerance: float = 1e-4,
) -> dict[str, Any]:
    """Export ``run_dir``'s model, check it, keep it at ``out``; returns what was checked.

    Raises:
        ValueError: one line — an unknown format or checkpoint, an existing ``out``, a missing
            extra, a model the exporter cannot handle (with the exporter's reason), or an
            export whose outputs differ from PyTorch's by more than ``tolerance``.
    """
    if format not in FORMATS:
        raise ValueError(f"--format {format!r}; expected one of: {', '.join(FORMATS)}")
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"--checkpoint {checkpoint!r}; expected one of: {', '.join(CHECKPOINTS)}")
    if format == "onnx":
        missing = [m for m in ("onnx", "onnxruntime", "onnxscript") if not _installed(m)]
        if missing:
            raise ValueError(f"ONNX export needs {', '.join(missing)}: {EXPORT_EXTRA}")
    out = out or run_dir / "export" / f"model{FORMATS[format]}"
    if out.exists():
        raise ValueError(f"--out {out} already exists; choose a new file")
    run = load_run(run_dir, checkpoint)
    serving = ServingModel(run.model, run.tasks, run.preprocessing, attention).eval()
    test = run.splits.test
    if not isinstance(test.inputs, Tensor):
        raise ValueError("a model with several input arrays cannot be exported (one input tensor)")
    count = min(CHECKED, len(test))
    lengths = None if test.lengths is None else test.lengths[:count]
    stored = test.meta.get("raw_inputs")  # a window transform cannot be undone
    raw = (
        stored[:count]
        if stored is not None
        else run.preprocessing.unprepare(test.inputs[:count], lengths)
    )
    sample = (raw[:3],) if lengths is None else (raw[:3], lengths[:3])
    made = not out.parent.exists()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=FORMATS[format])
    os.close(fd)
    tmp = Path(name)
    try:
        with torch.no_grad():
            expected = serving(raw, lengths)
        try:
            with warnings.catch_warnings(), _quiet("torch.onnx", "torch.export"):
                warnings.simplefilter("ignore")
                if format == "onnx":
                    steps = run.splits.train.layout == "sequence" and any_length(serving, sample)
                    _onnx(serving, sample, tmp, steps)
                    got = _run_onnx(tmp, raw, lengths)
                else:  # the traced module is what is saved (attnmtl never calls
                    traced = torch.jit.trace(serving, sample)  # torch.jit.load: it unpickles)
                    torch.jit.save(traced, str(tmp))
                    with torch.no_grad():
                        got = traced(raw, lengths) if lengths is not None else traced(raw)
        except ValueError:
            raise
        except Exception as err:  # the exporter's own failure, said in one line
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(
                f"model {type(run.model).__name__} cannot be exported to {format}: {first[:300]}"
            ) from None
        diffs = {
            name: float((torch.as_tensor(g) - e).abs().max())
            for name, g, e in zip(serving.output_names, got, expected, strict=True)
        }
        worst = max(diffs, key=lambda k: diffs[k])
        if not diffs[worst] <= tolerance:
            raise ValueError(
                f"export check failed: output {worst!r} differs from PyTorch by {diffs[worst]:.3g} "
                f"> tolerance {tolerance:g} on {count} test inputs; nothing was kept"
            )
        os.replace(tmp, out)
    finally:
        for left in (tmp, tmp.with_name(tmp.name + ".data")):
            left.unlink(missing_ok=True)
        if made and not any(out.parent.iterdir()):  # a folder made for a failed export
            out.parent.rmdir()
    return {
        "format": format,
        "path": str(out),
        "outputs": serving.output_names,
        "inputs": ["inputs"] + (["lengths"] if lengths is not None else []),
        "checked_inputs": count,
        "tolerance": tolerance,
        "max_abs_diff": diffs,
    }


@contextlib.contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """The exporter's own log lines (e.g. "torchvision is not installed") held back."""
    levels = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def any_length(model: nn.Module, sample: tuple[Tensor, ...]) -> bool:
    """Whether ``model`` reads sequences of another length than ``sample``'s (an MLP over a
    flattened window does not): one forward pass on the sample cut short by a step."""
    inputs = sample[0]
    if inputs.dim() < 3 or inputs.shape[1] < 2:
        return False
    shorter = (inputs[:, :-1], *(s.clamp_max(inputs.shape[1] - 1) for s in sample[1:]))
    try:
        with torch.no_grad():
            model(*shorter)
    except (RuntimeError, ValueError, IndexError):
        return False
    return True


def _onnx(serving: ServingModel, sample: tuple[Tensor, ...], path: Path, steps: bool) -> None:
    """``torch.onnx.export`` (the dynamo exporter) with a dynamic batch axis (and step axis,
    when ``steps``)."""
    batch = torch.export.Dim("batch", min=1)
    axes: dict[int, Any] = {0: batch}
    if steps:
        axes[1] = torch.export.Dim("steps", min=1)
    shapes: dict[str, Any] = {"inputs": axes}
    if len(sample) > 1:
        shapes["lengths"] = {0: batch}
    names = ["inputs", "lengths"][: len(sample)]
    torch.onnx.export(
        serving,
        sample,
        str(path),
        dynamo=True,
        input_names=names,
        output_names=serving.output_names,
        dynamic_shapes=shapes,
        external_data=False,  # one self-contained file (torch 2.13 would write FILE.data too)
        verbose=False,
    )


def _run_onnx(path: Path, inputs: Tensor, lengths: Tensor | None) -> list[Any]:
    """The ONNX graph's outputs under onnxruntime (CPU)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"inputs": inputs.numpy()}
    if lengths is not None:
        feed["lengths"] = lengths.numpy()
    return list(session.run(None, feed))
