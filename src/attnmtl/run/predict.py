"""``attnmtl predict``: a finished run applied to new inputs, one output row per input.

The input is a file the run's data section can read (CSV / Parquet with the run's input
columns, NPZ with its inputs array) in raw units — the run's standardisation is applied — or a
registered data set's name, whose ``split`` is built as ``attnmtl eval --data`` builds it. The
output (CSV, Parquet or JSONL, by the suffix of ``--out``) holds each task's prediction and
probabilities in the columns :func:`attnmtl.run.predictor.columns` names, and, with
``attention``, each task's weights over the input's steps. It is written atomically, and only
after every check has passed.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from attnmtl.core.io import write_atomic
from attnmtl.data import DATASETS
from attnmtl.data.files import file_format, read_columns, read_inputs, resolve_path
from attnmtl.data.files import header as file_header
from attnmtl.run.build import CHECKPOINTS, LoadedRun, load_run
from attnmtl.run.evaluate import SPLITS, shifted_data
from attnmtl.run.predictor import columns, predict

OUTPUTS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl"}
PROGRESS_ABOVE = 10_000  # inputs: a progress bar on stderr for longer ones


def output_format(out: Path | None) -> str:
    """``csv``, ``parquet`` or ``jsonl`` by the suffix (stdout: CSV)."""
    if out is None:
        return "csv"
    fmt = OUTPUTS.get(out.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"--out {out}: unknown suffix {out.suffix!r}; expected one of: {', '.join(OUTPUTS)}"
        )
    if not out.parent.is_dir():
        raise ValueError(f"--out {out}: the folder {out.parent} does not exist")
    if out.exists():
        raise ValueError(f"--out {out} already exists; choose a new file")
    return fmt


def read_source(
    run: LoadedRun, source: str, split: str
) -> tuple[torch.Tensor, Any, bool, dict[str, list[Any]], dict[str, torch.Tensor]]:
    """(inputs, lengths, prepared, id columns, anchors) of ``source``: a file in the run's
    raw units (with its ``id_columns``, copied into the output), or a data set name (``split``
    of it, as the data set hands it to the model, with its ``relative_to`` anchors)."""
    path = Path(source)
    if not path.exists() and source in DATASETS:
        if split not in SPLITS:
            raise ValueError(f"--split {split!r}; expected one of: {', '.join(SPLITS)}")
        name = None if source == run.config.data.name else source
        _, splits = shifted_data(run.run_dir, name)
        data = getattr(splits, split)
        if not isinstance(data.inputs, torch.Tensor):
            raise ValueError(f"data set {source!r} has several input arrays; predict takes one")
        return data.inputs, data.lengths, True, {}, data.anchors
    if run.config.data.name != "files":
        raise ValueError(
            f"{source}: not a file or a registered data set; run {run.run_dir} was trained on "
            f"data set {run.config.data.name!r} (give its name, or a data set with its tasks)"
        )
    if not path.is_file():
        raise ValueError(f"{source}: no such file")
    options = run.config.data.options()
    known = [str(c) for spec in options["tasks"].values() for c in _task_columns(spec)]
    known += [str(k) for k in options["tasks"]]
    known += [c for c in (options.get("split_column"), options.get("time_column")) if c]
    known += list(options.get("id_columns", ()))
    x, lengths = read_inputs(
        path,
        options["inputs"],
        options.get("format"),
        options.get("layout", "table"),
        options.get("lengths"),
        known,
    )
    stored = run.splits.train.meta.get("raw_inputs")  # a window run reads raw windows
    want = tuple(run.splits.train.input_shape if stored is None else stored.shape[1:])
    got = tuple(x.shape[1:])
    sequence = options.get("layout", "table") == "sequence"
    if got != want and not (sequence and got[1:] == want[1:] and reads_any_length(run, x)):
        raise ValueError(f"{source}: inputs have shape {got} per sample; the run reads {want}")
    lens = None if lengths is None else torch.from_numpy(lengths)
    fmt = file_format(resolve_path(path), options.get("format"))
    present = None if fmt == "npz" else file_header(resolve_path(path), fmt)
    wanted = [c for c in options.get("id_columns", ()) if present is None or c in present]
    ids = read_columns(path, wanted, options.get("format"))
    return torch.from_numpy(x), lens, False, {c: v.tolist() for c, v in ids.items()}, {}


def reads_any_length(run: LoadedRun, x: np.ndarray) -> bool:
    """Whether the run's model reads sequences of ``x``'s length (an RNN or a Transformer
    does; an MLP over a flattened window does not): one forward pass on one sample."""
    try:
        with torch.no_grad():
            run.model(run.preprocessing.prepare(torch.from_numpy(x[:1]).float()))
    except (RuntimeError, ValueError, IndexError):
        return False
    return True


def _task_columns(spec: Any) -> list[Any]:
    column = spec.get("column") if isinstance(spec, dict) else None
    return column if isinstance(column, list) else [column] if column is not None else []


def predict_run(
    run_dir: Path,
    source: str,
    out: Path | None = None,
    checkpoint: str = "best",
    attention: bool = False,
    split: str = "test",
    batch_size: int = 1024,
    console: Console | None = None,
) -> int:
    """Write ``run_dir``'s predictions for ``source`` to ``out`` (stdout when None); returns
    the number of rows. Every problem is a one-line ValueError raised before anything is
    written."""
    console = console or Console(stderr=True)
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"--checkpoint {checkpoint!r}; expected one of: {', '.join(CHECKPOINTS)}")
    fmt = output_format(out)
    run = load_run(run_dir, checkpoint)
    inputs, lengths, prepared, ids, anchors = read_source(run, source, split)
    with Progress(
        TextColumn("predict"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=len(inputs) <= PROGRESS_ABOVE,
        transient=True,
    ) as bar:
        job = bar.add_task("predict", total=len(inputs))
        predictions = predict(
            run.model,
            run.tasks,
            run.preprocessing,
            inputs,
            lengths,
            attention=attention,
            prepared=prepared,
            batch_size=batch_size,
            progress=lambda done: bar.update(job, completed=done),
            anchors=anchors,
        )
    table = {**ids, **columns(run.tasks, run.preprocessing, predictions)}
    write_table(table, out, fmt)
    return len(inputs)


def write_table(table: dict[str, list[Any]], out: Path | None, fmt: str) -> None:
    """The columns as CSV, Parquet or JSONL, atomically (CSV to stdout without ``out``)."""
    frame = pd.DataFrame(table)
    if fmt == "csv" and any(c.endswith("_attention") for c in table):
        for column in [c for c in table if c.endswith("_attention")]:
            frame[column] = [json.dumps(v) for v in table[column]]
    if out is None:
        frame.to_csv(sys.stdout, index=False)
        return
    if fmt == "parquet":
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
        os.close(fd)
        try:
            frame.to_parquet(tmp, index=False)
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    elif fmt == "jsonl":
        write_atomic(out, lambda f: frame.to_json(f, orient="records", lines=True))
    else:
        write_atomic(out, lambda f: frame.to_csv(f, index=False))
