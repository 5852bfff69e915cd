"""Evaluating a finished (or running) run directory on its own data or on other data."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from attnmtl.data import DATASETS, DataSplits
from attnmtl.data.splits import target_stats
from attnmtl.eval.metrics import evaluate
from attnmtl.run.build import CHECKPOINTS, build_data, load_run, resolve_device
from attnmtl.run.config import RunConfig, apply_overrides, parse_config, read_yaml

SPLITS = ("train", "val", "test")


# Builder argument → the keys of the training data's info that hold its (mean, std).
REUSED_STATS = {
    "input_stats": ("input_mean", "input_std"),
    "scale_stats": ("scale_mean", "scale_std"),
    "sum_stats": ("sum_mean", "sum_std"),
}


def reuse_statistics(section: dict[str, Any], info: Mapping[str, Any]) -> None:
    """Normalise other or shifted data with the training data's statistics.

    Built-in data sets standardise inputs and targets with their own mean and std; a shifted
    version must use the run's, or the shift (more noise, another scale) is partly normalised
    away. Sets each statistics argument the builder takes and the user did not give.
    """
    factory = DATASETS.get(section["name"])
    params = inspect.signature(factory).parameters
    for argument, (mean, std) in REUSED_STATS.items():
        if argument in params and argument not in section and mean in info and std in info:
            section[argument] = [float(info[mean]), float(info[std])]


def shifted_data(
    run_dir: Path, data: str | None = None, overrides: Sequence[str] = ()
) -> tuple[RunConfig, DataSplits]:
    """A run's data, or another registered data set (``data``) or a changed data section
    (``data.KEY=VALUE`` overrides), normalised with the run's own training statistics."""
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise ValueError(f"{run_dir}: not a run directory (no config.yaml)")
    for item in overrides:
        if not item.startswith("data."):
            raise ValueError(f"override {item!r}; eval takes data.KEY=VALUE overrides only")
    raw = read_yaml(config_path)
    saved = parse_config(raw)
    if data is not None:
        raw["data"] = {"name": data, "task_mask": saved.data.task_mask}
    raw = apply_overrides(raw, overrides)
    if data is not None or overrides:
        reuse_statistics(raw["data"], build_data(saved).info)
    config = parse_config(raw)
    return config, build_data(config)


def evaluate_run(
    run_dir: Path,
    data: str | None = None,
    overrides: Sequence[str] = (),
    split: str = "test",
    checkpoint: str = "best",
) -> dict[str, dict[str, float]]:
    """task → metric → value of a run's checkpoint on ``split`` of its data.

    Args:
        run_dir: a run directory.
        data: another registered data set (its default options) with the same tasks.
        overrides: ``data.KEY=VALUE`` changes to the data section (e.g. more noise).
        split: ``train``, ``val`` or ``test``.
        checkpoint: ``best`` or ``last``.
    """
    if split not in SPLITS:
        raise ValueError(f"--split {split!r}; expected one of: {', '.join(SPLITS)}")
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"--checkpoint {checkpoint!r}; expected one of: {', '.join(CHECKPOINTS)}")
    config, other = shifted_data(run_dir, data, overrides)
    device = resolve_device(config.train.device)
    run = load_run(run_dir, checkpoint, device, splits=other, data_name=config.data.name)
    return evaluate(
        run.model,
        getattr(run.splits, split),
        run.splits.tasks,
        config.train.eval_batch_size,
        device,
        target_stats(run.splits.info, run.splits.tasks),
    )
