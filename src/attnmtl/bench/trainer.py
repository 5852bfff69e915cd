"""Benchmark: the trainer's training throughput against a bare PyTorch loop.

Both sides train the same model (built from the same config, same initial weights) on the same
in-memory data with the same optimizer and schedule, batch size and shuffling:

* ``trainer``: :class:`~attnmtl.run.trainer.Trainer` as ``attnmtl train`` runs it — label
  masks, the weighting strategy's backward, per-task loss bookkeeping, the progress bar,
  metrics.jsonl and TensorBoard logging, checkpoints at the end of the epoch (into a temporary
  run directory). Its samples/s counts the training steps only (its own timer stops for
  evaluation and checkpoints).
* ``bare``: a nanoGPT-style loop written here — shuffle, gather, the data set's augmentation
  (dense scene sets), forward, the sum of the tasks' losses over the full batch, ``backward``,
  ``step``, schedule step — nothing else.

Each round trains one epoch with each, in alternating order; the medians and their ratio are
reported (ratio = trainer / bare; 1.0 means no overhead).
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from attnmtl.data import DataSplits
from attnmtl.data.dataset import batch_indices
from attnmtl.run.build import (
    build_data,
    build_model,
    build_optimizer,
    build_schedule,
    build_weighting,
    seed_everything,
)
from attnmtl.run.config import load_config
from attnmtl.run.trainer import Trainer


def bare_epoch(model: torch.nn.Module, splits: DataSplits, config: Any) -> float:
    """Samples/s of one epoch of the bare loop."""
    weighting = build_weighting(config, list(splits.tasks))
    optimizer = build_optimizer(config, model, weighting)
    schedule = build_schedule(config, optimizer, splits.train.num_batches(config.train.batch_size))
    generator = torch.Generator().manual_seed(config.train.seed)
    data, tasks = splits.train, splits.tasks
    model.train()
    start = time.perf_counter()
    for step, index in enumerate(
        batch_indices(len(data), config.train.batch_size, True, generator)
    ):
        batch = data.batch(index)
        if data.augment is not None:  # the data set's augmentation, drawn as the trainer draws it
            draw = torch.Generator().manual_seed(config.train.seed * 1_000_033 + step + 1)
            batch = data.augment(batch, draw)
        output = model(batch.inputs, batch.lengths)
        loss = sum(
            task.compute_loss(output.preds[name], batch.labels[name])
            for name, task in tasks.items()
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        optimizer.step()
        schedule.step()
    return len(data) / (time.perf_counter() - start)


def trainer_epoch(
    model: torch.nn.Module, splits: DataSplits, config: Any, console: Console
) -> float:
    """Samples/s of one epoch of the trainer (training steps only, as it reports them)."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer.from_config(config, splits, model, Path(tmp), console)
        summary = trainer.fit()
    rate: float = summary["train_samples_per_s"]
    return rate


def run(
    config_name: str = "default",
    overrides: Sequence[str] = (),
    rounds: int = 3,
    threads: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Median samples/s of both sides over ``rounds`` interleaved one-epoch rounds."""
    if threads is not None:
        torch.set_num_threads(threads)
    config = load_config(config_name, [*overrides, "train.epochs=1", "train.test_on=last"])
    seed_everything(config.train.seed)
    splits = build_data(config)
    seed_everything(config.train.seed)
    reference = build_model(config, splits)
    console = Console(stderr=True, quiet=True)
    rates: dict[str, list[float]] = {"trainer": [], "bare": []}
    for r in range(rounds + 1):  # round 0 warms up
        order = ["trainer", "bare"] if r % 2 == 0 else ["bare", "trainer"]
        for side in order:
            model = copy.deepcopy(reference)
            rate = (
                trainer_epoch(model, splits, config, console)
                if side == "trainer"
                else bare_epoch(model, splits, config)
            )
            if r > 0:
                rates[side].append(rate)
                log(f"round {r}: {side} {rate:,.0f} samples/s")
    trainer_rate = statistics.median(rates["trainer"])
    bare_rate = statistics.median(rates["bare"])
    return {
        "config": config_name,
        "samples": len(splits.train),
        "batch_size": config.train.batch_size,
        "threads": torch.get_num_threads(),
        "trainer_samples_per_s": trainer_rate,
        "bare_samples_per_s": bare_rate,
        "ratio": trainer_rate / bare_rate,
        "rounds": rates,
    }


def render(results: dict[str, Any]) -> Table:
    """A rich table of the medians and the ratio."""
    table = Table(
        title=f"training throughput, config {results['config']!r} "
        f"(batch {results['batch_size']}, {results['threads']} threads)"
    )
    table.add_column("loop")
    table.add_column("samples/s (median)", justify="right")
    table.add_column("ratio to bare", justify="right")
    table.add_row("bare PyTorch", f"{results['bare_samples_per_s']:,.0f}", "1.000")
    table.add_row(
        "attnmtl Trainer", f"{results['trainer_samples_per_s']:,.0f}", f"{results['ratio']:.3f}"
    )
    return table
