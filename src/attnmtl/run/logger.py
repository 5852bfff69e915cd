"""Run logging: ``metrics.jsonl`` lines, TensorBoard scalars and images, and a rich progress bar."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/Inf; keep them visible as strings
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    return value


class RunLogger:
    """Writes one JSON line per logged event and mirrors scalars to TensorBoard.

    Args:
        run_dir: the run directory (``metrics.jsonl`` and ``tb/`` go there); None logs nowhere.
        tensorboard: also write TensorBoard event files under ``tb/``.
        resume_step: continue a resumed run whose checkpoint was taken after this many steps:
            lines logged after it (by the run that was interrupted) are dropped, as are
            TensorBoard events after it, so the resumed run logs each step once.
    """

    def __init__(
        self, run_dir: Path | None, tensorboard: bool = True, resume_step: int | None = None
    ) -> None:
        self.file = None
        self.writer: Any = None
        if run_dir is None:
            return
        path = run_dir / "metrics.jsonl"
        if resume_step is not None and path.exists():
            lines = path.read_text().splitlines(keepends=True)
            kept = [line for line in lines if _step(line) <= resume_step]
            tmp = path.with_name(".metrics.jsonl.tmp")
            tmp.write_text("".join(kept))
            os.replace(tmp, path)
        self.file = path.open("a" if resume_step is not None else "w", buffering=1)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resume_step is None else resume_step + 1
            self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=purge)

    def log(self, event: str, step: int, **values: Any) -> None:
        """One JSON line ``{"event": ..., "step": ..., **values}``; scalars to TensorBoard."""
        if self.file is not None:
            self.file.write(json.dumps({"event": event, "step": step, **_finite(values)}) + "\n")
        if self.writer is not None:
            for tag, value in _flatten(values, event):
                self.writer.add_scalar(tag, value, step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """An (H, W, 3) image in [0, 1] to TensorBoard (nothing without TensorBoard)."""
        if self.writer is not None:
            self.writer.add_image(tag, image, step, dataformats="HWC")

    def close(self) -> None:
        """Flush and close the files."""
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _step(line: str) -> float:
    """The ``step`` of one metrics.jsonl line; infinity for a torn or foreign line."""
    try:
        step = json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf
    return step if isinstance(step, int) else math.inf


def _flatten(values: Mapping[str, Any], prefix: str) -> list[tuple[str, float]]:
    out = []
    for key, value in values.items():
        tag = f"{prefix}/{key}"
        if isinstance(value, Mapping):
            out.extend(_flatten(value, tag))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append((tag, float(value)))
    return out


class TrainProgress:
    """A rich progress bar over an epoch's batches showing samples/s and per-task loss."""

    def __init__(self, enabled: bool, console: Console | None = None) -> None:
        self.progress: Progress | None = None
        if enabled:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} samples/s"),
                TextColumn("{task.fields[losses]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=False,
                refresh_per_second=2,  # redrawing takes the GIL from the training thread
            )
        self.task: TaskID | None = None

    def __enter__(self) -> TrainProgress:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.progress is not None:
            self.progress.stop()

    def start_epoch(self, description: str, total: int, completed: int = 0) -> None:
        """A new bar for one epoch."""
        if self.progress is not None:
            self.task = self.progress.add_task(
                description, total=total, completed=completed, rate="-", losses=""
            )

    def update(self, completed: int, rate: float, losses: Mapping[str, float]) -> None:
        """Move the bar to ``completed`` batches and show the latest rate and losses."""
        if self.progress is not None and self.task is not None:
            text = " ".join(f"{k}={v:.3f}" for k, v in losses.items())
            self.progress.update(self.task, completed=completed, rate=f"{rate:,.0f}", losses=text)
