"""Training: the masked multi-task objective, the trainer, checkpoints, logging, runs."""

from attnmtl.engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from attnmtl.engine.objective import label_counts, task_losses
from attnmtl.engine.run import resume_run, train_run
from attnmtl.engine.setup import build_data, build_model, seed_everything
from attnmtl.engine.trainer import Trainer

__all__ = [
    "Checkpoint",
    "Trainer",
    "build_data",
    "build_model",
    "label_counts",
    "load_checkpoint",
    "resume_run",
    "save_checkpoint",
    "seed_everything",
    "task_losses",
    "train_run",
]
