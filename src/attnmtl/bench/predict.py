"""Benchmark: ``predict`` throughput against a bare loop calling the model.

On the ``csv_example`` run (trained here for a few epochs unless a run directory is given),
``rows`` input rows (the shipped wine table's rows, tiled, with 1% noise) are predicted by:

* ``predict``: :func:`attnmtl.run.predictor.predict` as ``attnmtl predict`` calls it — the
  run's input standardisation, batched forward passes, and the per-task outputs (softmax
  probabilities and class ids, natural-unit values), gathered on the CPU;
* ``bare``: ``model(x[i:i + B])`` under ``torch.inference_mode()`` on the already standardised
  tensor, in the same batch size, the outputs discarded.

Rounds alternate the two; medians of samples/s and their ratio (predict / bare) are reported,
and one end-to-end ``attnmtl predict`` of the same rows from a CSV file to a CSV file is timed.
"""

from __future__ import annotations

import io
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from rich.console import Console
from rich.table import Table

from attnmtl.data.files import resolve_path
from attnmtl.pipeline import train_run
from attnmtl.run.build import load_run
from attnmtl.run.config import load_config
from attnmtl.run.predict import predict_run
from attnmtl.run.predictor import predict

QUICK = ["train.epochs=5", "train.report=false", "train.tensorboard=false", "train.progress=false"]


def rows_of(run: Any, rows: int, seed: int = 0) -> pd.DataFrame:
    """``rows`` rows of the run's input columns: the wine table tiled, with 1% noise."""
    names = list(run.config.data.options()["inputs"])
    table = pd.read_csv(resolve_path("attnmtl:wine_mt.csv"))[names]
    tiled = pd.concat([table] * (rows // len(table) + 1), ignore_index=True).iloc[:rows]
    gen = torch.Generator().manual_seed(seed)
    noise = 1 + 0.01 * torch.randn(len(tiled), len(names), generator=gen, dtype=torch.float64)
    return pd.DataFrame((torch.tensor(tiled.to_numpy()) * noise).numpy(), columns=names)


def run(
    run_dir: Path | None = None,
    rows: int = 100_000,
    rounds: int = 5,
    batch_size: int = 1024,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Time both sides (see the module docstring); the results."""
    with tempfile.TemporaryDirectory() as tmp:
        if run_dir is None:
            log("training csv_example (5 epochs) to predict with")
            run_dir = Path(tmp) / "run"
            quiet = Console(file=io.StringIO())
            train_run(load_config("csv_example", QUICK), run_dir, quiet)
        loaded = load_run(run_dir)
        frame = rows_of(loaded, rows)
        raw = torch.tensor(frame.to_numpy(), dtype=torch.float32)
        prepared = loaded.preprocessing.prepare(raw)
        model, tasks, prep = loaded.model, loaded.tasks, loaded.preprocessing

        def library() -> float:
            start = time.perf_counter()
            predict(model, tasks, prep, raw, batch_size=batch_size)
            return rows / (time.perf_counter() - start)

        def bare() -> float:
            start = time.perf_counter()
            with torch.inference_mode():
                for i in range(0, rows, batch_size):
                    model(prepared[i : i + batch_size])
            return rows / (time.perf_counter() - start)

        library(), bare()  # warm-up
        timings: dict[str, list[float]] = {"predict": [], "bare": []}
        for r in range(rounds):
            for name, side in (("predict", library), ("bare", bare))[:: 1 if r % 2 else -1]:
                timings[name].append(side())
        csv_in, csv_out = Path(tmp) / "in.csv", Path(tmp) / "out.csv"
        frame.to_csv(csv_in, index=False)
        start = time.perf_counter()
        predict_run(run_dir, str(csv_in), csv_out, console=Console(file=io.StringIO()))
        end_to_end = time.perf_counter() - start
    medians = {k: statistics.median(v) for k, v in timings.items()}
    return {
        "rows": rows,
        "batch_size": batch_size,
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "samples_per_s": medians,
        "all_samples_per_s": timings,
        "ratio": medians["predict"] / medians["bare"],
        "end_to_end_s": end_to_end,
    }


def render(results: dict[str, Any]) -> Table:
    """The results as a rich table."""
    table = Table(
        title=f"predict vs a bare model loop: {results['rows']:,} rows, batch "
        f"{results['batch_size']}, {results['threads']} threads, median of {results['rounds']}"
    )
    table.add_column("side")
    table.add_column("samples/s", justify="right")
    for side, value in results["samples_per_s"].items():
        table.add_row(side, f"{value:,.0f}")
    table.add_row("ratio", f"{results['ratio']:.3f}")
    table.add_row("attnmtl predict CSV → CSV", f"{results['end_to_end_s']:.2f} s")
    return table
