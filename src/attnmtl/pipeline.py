"""A run from start to finish: config → data, model → run directory → training → efficiency
→ generalization → report, and resuming one. The orchestration lives here, above the run
layer (which trains) and the report (which draws); :func:`train_run` is ``attnmtl train``.

The run directory is created only once the config, the data and the model have all been
built and checked, so bad input never leaves a half-written directory; an existing directory is
never reused (except by ``resume``).
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from attnmtl.core.distributed import init_distributed
from attnmtl.core.io import write_json_atomic, write_text_atomic
from attnmtl.eval.baselines import fit_baselines
from attnmtl.eval.efficiency import measure_efficiency
from attnmtl.report import AttentionImages, build_report
from attnmtl.run.build import build_data, build_model, save_pretrained_encoder, seed_everything
from attnmtl.run.checkpoint import Checkpoint, checkpoint_exists, load_reporting
from attnmtl.run.config import RunConfig, apply_overrides, dump_config, parse_config, read_yaml
from attnmtl.run.generalize import PRESETS, generalization
from attnmtl.run.trainer import Trainer

RESUMABLE_KEYS = ("train.epochs", "train.progress", "train.device", "train.threads")
# Every run's per-epoch callbacks: attention heatmaps in TensorBoard (when it is enabled).
CALLBACKS = (AttentionImages(),)


def new_run_dir(out: Path | None, name: str) -> Path:
    """``out`` itself (must not exist yet, or be empty), or ``runs/<name>-<time>``."""
    if out is not None:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ValueError(
                f"--out {out} already exists; runs are never overwritten "
                "(choose a new directory, or --resume it)"
            )
        return out
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(f"name={name!r}; expected letters, digits, '_', '-', '.'")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / f"{name}-{stamp}"
    suffix = 1
    while path.exists():  # (a race between two runs is caught by mkdir(exist_ok=False))
        path = Path("runs") / f"{name}-{stamp}-{suffix}"
        suffix += 1
    return path


def train_run(
    config: RunConfig,
    out: Path | None = None,
    console: Console | None = None,
    write: bool = True,
) -> tuple[Path | None, dict[str, Any]]:
    """Train a new run; returns its directory (None when ``write`` is False) and summary.

    Under torchrun every process trains its shard (:mod:`attnmtl.core.distributed`); rank 0
    alone creates the directory, writes, logs and reports.
    """
    console = console or Console(stderr=True)
    job = init_distributed(config.train.device)
    if job is not None and not job.main:
        console = Console(stderr=True, quiet=True)
    # Checked on every process (same answer everywhere) before any collective, so a bad --out
    # ends them all with the same line; rank 0 alone creates it.
    planned = new_run_dir(out, config.name) if write else None
    seed_everything(config.train.seed, config.train.deterministic)
    splits = build_data(config)
    notes = splits.info.get("notes")  # e.g. an inferred class set, unscaled inputs
    for note in notes if isinstance(notes, list) else []:
        console.log(f"note: {note}")
    seed_everything(config.train.seed, config.train.deterministic)  # model init: own stream
    model = build_model(config, splits)
    trainer = Trainer.from_config(config, splits, model, console=console, callbacks=CALLBACKS)
    run_dir = planned if job is None or job.main else None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=run_dir == out)  # a generated name is never reused
        write_text_atomic(run_dir / "config.yaml", dump_config(config))
        trainer.run_dir = run_dir
        console.log(f"run directory: {run_dir}")
    summary = trainer.fit()
    if run_dir is not None:
        summary = complete_run(run_dir, config, trainer, summary, console)
    return run_dir, summary


def complete_run(
    run_dir: Path, config: RunConfig, trainer: Trainer, summary: dict[str, Any], console: Console
) -> dict[str, Any]:
    """After training: classical baselines (``train.baselines``) and (``train.report``)
    efficiency and, for built-in data, generalization to the data set's shift presets go into
    summary.json, then report.html is written."""
    if any(callable(getattr(m, "save_pretrained", None)) for m in trainer.model.modules()):
        folder = save_pretrained_encoder(run_dir)
        console.log(f"fine-tuned encoder (Hugging Face folder, adapters merged): {folder}")
    if config.train.baselines:
        console.log("fitting the classical baselines (attnmtl.eval.baselines)")
        summary["baselines"] = fit_baselines(trainer.splits, seed=config.train.seed)
    if not config.train.report:
        if config.train.baselines:
            write_json_atomic(run_dir / "summary.json", summary)
        return summary

    efficiency = measure_efficiency(trainer.model, trainer.splits.test, trainer.device)
    summary["efficiency"] = {
        "train_samples_per_s": summary.get("train_samples_per_s"),
        **efficiency,
    }
    if config.data.name in PRESETS:
        summary["generalization"] = generalization(run_dir)
    write_json_atomic(run_dir / "summary.json", summary)
    path = build_report(run_dir)
    console.log(f"report: {path}")
    return summary


def resume_run(
    run_dir: Path, overrides: Sequence[str] = (), console: Console | None = None
) -> tuple[Path, dict[str, Any]]:
    """Continue ``run_dir`` from its last checkpoint (``train.epochs`` may be raised).

    A ``last`` checkpoint that fails its checks is replaced by its previous generation, with a
    warning; a run killed before its first checkpoint starts again from the beginning; a run
    whose training ended but whose summary or report was not written gets them written.
    """
    console = console or Console(stderr=True)
    job = None
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise ValueError(f"--resume {run_dir}: not a run directory (no config.yaml)")
    for item in overrides:
        key = item.partition("=")[0]
        if key not in RESUMABLE_KEYS:
            raise ValueError(
                f"override {key!r} cannot change on --resume; allowed: {', '.join(RESUMABLE_KEYS)}"
            )
    saved = parse_config(read_yaml(config_path))
    config = parse_config(apply_overrides(read_yaml(config_path), overrides))
    job = init_distributed(config.train.device)
    main = job is None or job.main
    if not main:
        console = Console(stderr=True, quiet=True)
    last = run_dir / "checkpoints" / "last"
    checkpoint: Checkpoint | None = None
    # Rank 0 loads (repairing a damaged `last`) first and tells the others whether it could;
    # they then read what it left, so every process continues or fails alike.
    failure: ValueError | None = None
    if main and checkpoint_exists(last):
        try:
            checkpoint = load_reporting(last, console.log, repair=True)
        except ValueError as err:
            failure = err
    if job is not None:
        flag = torch.tensor([failure is not None], dtype=torch.int64, device=job.device)
        if int(job.all_max(flag)):
            raise failure or ValueError(f"no intact checkpoint at {last} (see rank 0's error)")
        if not main and checkpoint_exists(last):
            checkpoint = load_reporting(last, console.log, repair=False)
    elif failure is not None:
        raise failure
    if checkpoint is not None:
        check_resumable(saved, config, checkpoint.meta, run_complete(run_dir, saved))
    seed_everything(config.train.seed, config.train.deterministic)  # as train_run does
    splits = build_data(config)
    seed_everything(config.train.seed, config.train.deterministic)
    model = build_model(config, splits)
    trainer = Trainer.from_config(
        config, splits, model, run_dir if main else None, console, callbacks=CALLBACKS
    )
    if checkpoint is not None:
        trainer.restore(checkpoint)
    if not main:
        return run_dir, trainer.fit()
    if config != saved:
        write_text_atomic(config_path, dump_config(config))
    if checkpoint is None:  # killed before its first checkpoint: its partial logs go
        shutil.rmtree(run_dir / "tb", ignore_errors=True)
        console.log(f"{run_dir} has no checkpoint yet: training from the start")
    else:
        position = trainer.position
        console.log(f"resuming {run_dir} at epoch {position.epoch + 1}, batch {position.batch}")
    return run_dir, complete_run(run_dir, config, trainer, trainer.fit(), console)


def run_complete(run_dir: Path, config: RunConfig) -> bool:
    """Whether everything a finished run writes is there (summary.json, and report.html when
    ``train.report``); both are written last."""
    names = ["summary.json"] + (["report.html"] if config.train.report else [])
    return all((run_dir / name).is_file() for name in names)


def check_resumable(
    saved: RunConfig, config: RunConfig, meta: Mapping[str, Any], complete: bool = True
) -> None:
    """Refuse a resume that cannot continue the run as it was (or has nothing left to do)."""
    done, epochs = int(meta["epoch"]), config.train.epochs
    stopped = meta.get("stopped_early")
    if stopped is not None and complete:
        raise ValueError(
            f"the run has finished: early stopping ended it after epoch {stopped} "
            "(train.early_stopping)"
        )
    if done >= epochs and int(meta["batch"]) == 0 and complete:
        raise ValueError(
            f"the run has finished ({done} of {saved.train.epochs} epochs); raise train.epochs "
            "to train further"
        )
    if epochs != saved.train.epochs and config.schedule.name in ("onecycle", "cosine"):
        raise ValueError(
            f"train.epochs cannot change on --resume with schedule {config.schedule.name!r}: "
            "its shape is fixed by the run's length (constant and step schedules can be extended)"
        )


def baselines_table(summary: Mapping[str, Any]) -> Table:
    """The run's primary test metric per task (accuracy, or MAE for regression) beside the
    classical baselines' (``summary["baselines"]``)."""
    primary = {t: "accuracy" if "accuracy" in m else "mae" for t, m in summary["tasks"].items()}
    table = Table(title="this run against classical baselines (test)")
    table.add_column("model")
    for task, metric in primary.items():
        table.add_column(f"{task} {metric}", justify="right")
    rows = {"this run": summary["tasks"], **summary["baselines"]}
    for name, scores in rows.items():
        cells = [scores.get(t, {}).get(m) for t, m in primary.items()]
        table.add_row(name, *("-" if v is None else f"{v:.4f}" for v in cells))
    return table


def results_table(results: Mapping[str, Mapping[str, float]], title: str) -> Table:
    """A rich table: one row per task, one column per metric."""
    metrics: list[str] = []
    for values in results.values():
        metrics += [m for m in values if m not in metrics]
    table = Table(title=title)
    table.add_column("task")
    for metric in metrics:
        table.add_column(metric, justify="right")
    for task, values in results.items():
        table.add_row(task, *(f"{values[m]:.4f}" if m in values else "-" for m in metrics))
    return table
