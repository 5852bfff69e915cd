"""The run layer: a run's config schema, building its parts, the trainer, checkpoints, and
loading, evaluating and generalizing a finished run (loading written once, in
:mod:`attnmtl.run.build`).
"""

from attnmtl.run.build import (
    LoadedRun,
    build_data,
    build_model,
    build_optimizer,
    build_schedule,
    build_weighting,
    load_run,
    load_run_config,
    load_run_model,
    seed_everything,
)
from attnmtl.run.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from attnmtl.run.config import RunConfig, TrainConfig, load_config, parse_config
from attnmtl.run.evaluate import evaluate_run
from attnmtl.run.trainer import Callback, Trainer, monitor_score
from attnmtl.run.transfer import TransferObjective, load_teacher

__all__ = [
    "Callback",
    "Checkpoint",
    "LoadedRun",
    "RunConfig",
    "TrainConfig",
    "Trainer",
    "TransferObjective",
    "build_data",
    "build_model",
    "build_optimizer",
    "build_schedule",
    "build_weighting",
    "evaluate_run",
    "load_checkpoint",
    "load_config",
    "load_run",
    "load_run_config",
    "load_run_model",
    "load_teacher",
    "monitor_score",
    "parse_config",
    "save_checkpoint",
    "seed_everything",
]
