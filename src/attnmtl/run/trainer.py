"""The training loop: forward, task losses, weighting, step, log, evaluate, checkpoint.

Axes: B batch, K tasks.

Read it top to bottom (:meth:`Trainer.fit`). Everything a resumed run needs to continue
exactly — model, optimizer, schedule, strategy state, every RNG, the shuffling generator as it
was at the start of the current epoch and the number of batches already done — goes into each
checkpoint, so on CPU with a fixed seed a run that is killed and resumed ends with the same
weights as one that was not.

The trainer is given its parts — model, data, weighting, optimizer, schedule, the ``train``
settings, optional transfer terms, a model-selection score and per-epoch callbacks — and owns
only the loop; :meth:`Trainer.from_config` builds the parts from a run config.

Faults: SIGINT and SIGTERM stop the loop at the next step boundary, after writing ``last``
(:class:`~attnmtl.run.signals.StopRequests`, :class:`~attnmtl.run.signals.TrainingInterrupted`);
a non-finite task loss stops the run with an error naming the task, or skips that step
(``train.nonfinite``), never silently.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from rich.console import Console
from torch import Tensor, nn

from attnmtl.core.distributed import current as current_job
from attnmtl.core.io import write_json_atomic
from attnmtl.core.losses import label_counts, part_batches, part_losses, task_losses
from attnmtl.core.output import MultiTaskOutput
from attnmtl.core.tasks import Task
from attnmtl.data import Batch, DataSplits
from attnmtl.data.dataset import batch_indices
from attnmtl.data.splits import target_stats
from attnmtl.eval.dense_images import mask_grid, prediction_grid, prediction_rows
from attnmtl.eval.efficiency import count_parameters
from attnmtl.eval.metrics import HIGHER_IS_BETTER, evaluate, metric_names
from attnmtl.models.registry import splitting_models
from attnmtl.run.build import build_optimizer, build_schedule, build_weighting, resolve_device
from attnmtl.run.checkpoint import (
    Checkpoint,
    CheckpointWriteError,
    load_checkpoint,
    load_reporting,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from attnmtl.run.config import RunConfig, TrainConfig
from attnmtl.run.logger import RunLogger, TrainProgress
from attnmtl.run.signals import StopRequests, TrainingInterrupted
from attnmtl.run.transfer import TransferObjective
from attnmtl.weighting import StepContext, Weighting


class Clock:
    """Training time and samples between log lines, and in all (the reported speed)."""

    def __init__(self) -> None:
        self.seconds, self.samples = 0.0, 0
        self.tick()

    def tick(self) -> None:
        """Start a new stretch (each epoch, and after each log line)."""
        self._start, self._samples = time.perf_counter(), 0

    def count(self, samples: int) -> None:
        self._samples += samples

    def lap(self) -> float:
        """Close the stretch: add it to the totals and return its samples per second."""
        elapsed = time.perf_counter() - self._start
        self.seconds += elapsed
        self.samples += self._samples
        rate = self._samples / max(elapsed, 1e-9)
        self.tick()
        return rate


@dataclass
class Position:
    """Where training stands: the next epoch and batch to run, the steps taken so far."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    best: float | None = None
    best_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0  # steps skipped for a non-finite loss (train.nonfinite=skip), in all
    epoch_skipped: int = 0  # ... and in the running epoch
    # early stopping: epochs since the score last improved by more than min_delta, the
    # score that counts as that improvement, and the epoch (1-based) training stopped after
    stale: int = 0
    reference: float | None = None
    stopped_early: int | None = None


# A first-step loss this many times another task's is warned of (it would swamp the others).
LOSS_SCALE_RATIO = 1000.0
PREVIEWS = 3  # validation images per dense task in TensorBoard (Trainer.log_previews)
Scores = Mapping[str, Mapping[str, float]]  # task → metric → value


class Callback(Protocol):
    """Called at the end of every epoch, after validation and logging, before the checkpoints
    are written: ``callback(trainer, epoch, val)`` with the 0-based epoch just finished and its
    validation scores (e.g. :class:`attnmtl.report.AttentionImages` draws TensorBoard images)."""

    def __call__(self, trainer: Trainer, epoch: int, val: Scores) -> None: ...


def monitor_score(monitor: str, tasks: Mapping[str, Task]) -> Callable[[Scores], float]:
    """Model selection by ``train.monitor``: the summed validation loss (``loss``) or one
    task's metric (``TASK:METRIC``), as a value to minimise (sign flipped where higher is
    better; a missing value counts as +inf)."""
    if monitor == "loss":
        return lambda val: sum(m["loss"] for m in val.values())
    task, _, metric = monitor.partition(":")
    if task not in tasks:
        raise ValueError(
            f"train.monitor={monitor!r}; expected 'loss' or TASK:METRIC with a task in "
            f"{sorted(tasks)}"
        )
    valid = metric_names(tasks[task])
    if metric not in valid:
        raise ValueError(f"train.monitor={monitor!r}; task {task!r} reports {', '.join(valid)}")
    sign = -1.0 if HIGHER_IS_BETTER[metric] else 1.0

    def score(val: Scores) -> float:
        value = val.get(task, {}).get(metric)
        return math.inf if value is None else sign * value

    return score


def training_device(settings: TrainConfig) -> torch.device:
    """``train.device`` resolved; under torchrun with CUDA, this process's ``LOCAL_RANK`` GPU."""
    device = resolve_device(settings.device)
    job = current_job()
    if job is not None and device.type == "cuda":
        device = torch.device("cuda", job.local_rank)
    return device


class Trainer:
    """Trains a multi-task model: every part is given, the loop is the trainer's.

    Args:
        model: a multi-task model (``shared_parameters()`` / ``task_parameters(task)``).
        splits: the data (train, val, test).
        weighting: the task-balancing strategy.
        optimizer: over the model's (and the strategy's) parameters.
        schedule: a learning-rate schedule stepped once per optimizer step.
        settings: the ``train`` section (epochs, batch size, device, AMP, checkpoints...).
        transfer: transfer terms added to the task losses
            (:class:`~attnmtl.run.transfer.TransferObjective`), or None.
        score: model selection: validation scores → a value to minimise; the epoch with the
            lowest is kept as ``best`` (default: :func:`monitor_score` of ``train.monitor``).
        callbacks: called at the end of every epoch (:class:`Callback`).
        run_dir: where checkpoints, metrics.jsonl and summary.json go; None writes nothing.
        console: where the progress bar and messages go.
        name: the run's name in summary.json.

    :meth:`from_config` builds every part from a run config, as ``attnmtl train`` does.
    """

    def __init__(
        self,
        model: nn.Module,
        splits: DataSplits,
        weighting: Weighting,
        optimizer: torch.optim.Optimizer,
        schedule: torch.optim.lr_scheduler.LRScheduler,
        settings: TrainConfig,
        *,
        transfer: TransferObjective | None = None,
        score: Callable[[Scores], float] | None = None,
        callbacks: Sequence[Callback] = (),
        run_dir: Path | None = None,
        console: Console | None = None,
        name: str = "run",
    ) -> None:
        self.splits, self.run_dir, self.name = splits, run_dir, name
        self.settings = train = settings
        self.console = console or Console(stderr=True)
        if train.threads is not None:
            torch.set_num_threads(train.threads)
        self.device = training_device(train)
        # Under torchrun: this process's rank and the job (see attnmtl.core.distributed).
        self.dist = current_job()
        if train.amp and self.device.type != "cuda":
            raise ValueError("train.amp=true needs a CUDA device (train.device)")
        self.tasks = splits.tasks
        # metrics in natural units: the data set's target standardisation undone
        self.target_stats = target_stats(splits.info, self.tasks)
        self.model = model.to(self.device)  # (in place: the optimizer's parameters stay)
        self.weighting = weighting.to(self.device)
        if self.dist is not None:  # every process starts from rank 0's weights; ranks > 0
            self.dist.broadcast_module(self.model)  # get their own dropout stream (rank 0
            self.dist.broadcast_module(self.weighting)  # keeps a single process's)
            if self.dist.rank > 0:
                torch.manual_seed(train.seed + self.dist.rank)
        self.optimizer, self.schedule = optimizer, schedule
        self.amp_dtype = torch.float16 if train.amp_dtype == "float16" else torch.bfloat16
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=train.amp and self.amp_dtype == torch.float16
        )
        self.shuffle = torch.Generator().manual_seed(train.seed)
        self.shared = list(model.shared_parameters())  # type: ignore[operator]
        groups = getattr(model, "shared_groups", None)  # (per-layer strategies read it)
        self.shared_groups = groups() if callable(groups) else None
        self.task_params = {t: list(model.task_parameters(t)) for t in self.tasks}  # type: ignore[operator]
        # Gradient-based strategies take per-task gradients at the shared representation from
        # one backward pass when the model cuts it per task (FeatureSplit).
        can_split = bool(getattr(model, "splits_features", False))
        self.split_features = self.weighting.wants_split() and can_split
        if self.weighting.needs == "features" and not can_split:
            raise ValueError(
                f"weighting {type(weighting).__name__} with mode=features needs a model with one "
                f"shared representation ({', '.join(splitting_models())}); model "
                f"{type(model).__name__} has none: use weighting.mode=parameters"
            )
        self.transfer = transfer
        self.score = score or monitor_score(train.monitor, self.tasks)
        self.callbacks = list(callbacks)
        self.position = Position()
        self.writer: Any = None  # the TensorBoard writer while fit() runs (when enabled)
        # The running epoch's loss sums (for its logged mean), kept across a mid-epoch resume.
        self.epoch_sums: dict[str, Tensor] = {}
        self.epoch_counts: dict[str, int] = {}

    @classmethod
    def from_config(
        cls,
        config: RunConfig,
        splits: DataSplits,
        model: nn.Module,
        run_dir: Path | None = None,
        console: Console | None = None,
        **options: Any,
    ) -> Trainer:
        """A trainer whose weighting, optimizer, schedule and transfer terms are built from
        ``config`` (``options``: :class:`Trainer`'s keyword arguments, e.g. ``score``)."""
        train = config.train
        device = training_device(train)
        weighting = build_weighting(config, list(splits.tasks)).to(device)
        optimizer = build_optimizer(config, model.to(device), weighting)
        schedule = build_schedule(config, optimizer, splits.train.num_batches(train.batch_size))
        transfer = None
        if config.transfer.active():  # tried on two samples now, before a run directory exists
            transfer = TransferObjective(config.transfer, model, splits.tasks, device)
            transfer.check(model, splits.train)
        return cls(
            model,
            splits,
            weighting,
            optimizer,
            schedule,
            train,
            transfer=transfer,
            run_dir=run_dir,
            console=console,
            name=config.name,
            **options,
        )

    # ------------------------------------------------------------------ the loop

    def fit(self) -> dict[str, Any]:
        """Train to the configured number of epochs and return the summary."""
        train, pos = self.settings, self.position
        logger = RunLogger(
            self.run_dir,
            train.tensorboard and self.run_dir is not None,
            resume_step=pos.step if pos.step > 0 else None,
        )
        self.writer = logger.writer
        clock = Clock()
        try:
            with TrainProgress(train.progress, self.console) as progress, StopRequests() as stop:
                while pos.epoch < train.epochs and pos.stopped_early is None:
                    self.run_epoch(logger, progress, stop, clock)
        finally:
            logger.close()
            self.writer = None
            if self.transfer is not None:  # the capture hooks leave the model with the loop
                self.transfer.close()
        return self.finish(clock.seconds, clock.samples)

    def run_epoch(
        self, logger: RunLogger, progress: TrainProgress, stop: StopRequests, clock: Clock
    ) -> None:
        """The rest of the current epoch (all of it, or from a resumed batch), then its end."""
        train, pos = self.settings, self.position
        epoch_start_state = self.shuffle.get_state()
        order = batch_indices(len(self.splits.train), train.batch_size, True, self.shuffle)
        progress.start_epoch(f"epoch {pos.epoch + 1}/{train.epochs}", len(order), pos.batch)
        if pos.batch == 0:
            self.epoch_sums = {t: torch.zeros((), device=self.device) for t in self.tasks}
            self.epoch_counts = dict.fromkeys(self.tasks, 0)
        clock.tick()
        for index in order[pos.batch :]:
            if self.dist is not None:  # this process's part of the global batch
                if len(index) < self.dist.world:  # too small to share: dropped
                    pos.batch += 1
                    continue
                index = self.dist.shard(index)
            batch = self.splits.train.batch(index).to(self.device, non_blocking=True)
            if self.splits.train.augment is not None:  # a function of the seed and the step
                draw = torch.Generator().manual_seed(train.seed * 1_000_033 + pos.step + 1)
                batch = self.splits.train.augment(batch, draw)
            losses, present, weights = self.step(batch)
            for (task, loss), n in zip(losses.items(), present, strict=True):
                self.epoch_sums[task] += loss.detach() * n
                self.epoch_counts[task] += n
            pos.batch += 1
            pos.step += 1
            clock.count(len(batch))
            if pos.step % train.log_every == 0 or pos.batch == len(order):
                self.log_step(logger, progress, clock, losses, weights)
            signum = self.agreed_stop(stop.signum)  # read once, the same everywhere
            if signum is not None or (
                train.checkpoint_every
                and pos.step % train.checkpoint_every == 0
                and pos.batch < len(order)
            ):
                self.save("last", epoch_start_state)
            if signum is not None:
                raise TrainingInterrupted(signum, pos.step, self.run_dir)
        self.end_epoch(logger, self.epoch_sums, self.epoch_counts)
        signum = self.agreed_stop(stop.signum)
        if signum is not None:  # end_epoch has just written `last`
            raise TrainingInterrupted(signum, pos.step, self.run_dir)

    def log_step(
        self,
        logger: RunLogger,
        progress: TrainProgress,
        clock: Clock,
        losses: Mapping[str, Tensor],
        weights: Mapping[str, Tensor],
    ) -> None:
        """The progress bar and a ``train`` event: losses, weights, learning rate, speed, and
        the task gradients' cosines and norms where the strategy computed them (``conflict``,
        from its Gram matrix: no extra backward pass)."""
        pos = self.position
        rate = clock.lap()
        current = {t: float(v.detach()) for t, v in losses.items()}
        progress.update(pos.batch, rate, current)
        stats = self.weighting.gradient_stats() if weights else None
        extra = {"conflict": stats.as_log()} if stats is not None else {}
        logger.log(
            "train",
            pos.step,
            epoch=pos.epoch,
            loss=current,
            weights={t: float(w) for t, w in weights.items()},
            lr=self.optimizer.param_groups[0]["lr"],
            samples_per_s=rate,
            **extra,
            **self.transfer_log(),
        )

    def progress(self) -> float:
        """The share of training done before the current step, in [0, 1)."""
        per_epoch = max(1, math.ceil(len(self.splits.train) / self.settings.batch_size))
        pos = self.position
        return (pos.epoch + pos.batch / per_epoch) / max(1, self.settings.epochs)

    def step(self, batch: Batch) -> tuple[dict[str, Tensor], list[int], dict[str, Tensor]]:
        """One optimizer step on ``batch``: forward, masked task losses, weighting, update."""
        present_counts = label_counts(batch, self.tasks)
        split = (
            self.model.split_features()  # type: ignore[operator]
            if self.split_features
            else contextlib.nullcontext()
        )
        if self.transfer is not None:
            self.transfer.begin()
        with split as cut, self.weighting.capture(self.model), self.autocast():
            output = self.model(batch.inputs, batch.lengths)
            losses = task_losses(output, batch, self.tasks, present_counts)
            terms = self.transfer(output, batch) if self.transfer is not None else {}
            if self.transfer is not None:  # annealed teachers' soft targets (BAM!)
                losses = self.transfer.anneal(losses, output, batch, self.progress())
        if self.dist is not None:  # global means in value, this shard's gradient (see module)
            local = {t: n for t, n in zip(self.tasks, present_counts, strict=True) if n > 0}
            losses, counts = self.dist.global_losses(
                losses, local, self.tasks, lambda t: output.preds[t].sum() * 0, self.device
            )
            present_counts = [counts.get(t, 0) for t in self.tasks]
        if not losses and not terms:  # nothing labelled, nothing to transfer: nothing to learn
            return {}, [], {}
        if not self.finite(losses, terms):  # train.nonfinite=skip: no update, no schedule step
            self.optimizer.zero_grad(set_to_none=True)
            return {}, [], {}
        self.optimizer.zero_grad(set_to_none=True)
        if terms:
            self.last_transfer = {k: v.detach() for k, v in terms.items()}
            self.backward_transfer(torch.stack(list(terms.values())).sum(), cut)
        if not losses:
            weights: dict[str, Tensor] = {}
            self.average_gradients()
            self.finish_step(batch)
            return {}, [], weights
        ctx = StepContext(
            self.shared,
            output.features,
            self.position.step,
            self.position.epoch,
            self.scaler.scale,
            self.task_params,
            cut,
            self.dist,
            self.shared_groups,
            lambda n: self.part_losses(output, batch, n),
            lambda n: self.part_forward(batch, n),
            lambda: self.recompute(batch),
            self.heldout,
            float(self.optimizer.param_groups[0]["lr"]),
            self.model,
        )
        weights = self.weighting.backward(losses, ctx)
        self.average_gradients()
        self.finish_step(batch)
        return losses, [n for n in present_counts if n > 0], weights

    def finite(self, losses: Mapping[str, Tensor], terms: Mapping[str, Tensor]) -> bool:
        """Whether every task loss and transfer term of the step is finite (one host sync).

        If not, ``train.nonfinite`` decides: ``stop`` raises ValueError naming the task(s) and
        the step; ``skip`` counts the step as skipped, says so at the first skip of each epoch
        and returns False. (Non-finite gradients under float16 AMP are the GradScaler's.)
        """
        named = {f"task {t!r}": v for t, v in losses.items()}
        named.update({f"transfer term {k!r}": v for k, v in terms.items()})
        values = torch.stack([v.detach().float() for v in named.values()])  # (K,)
        if self.dist is not None:  # a non-finite value on any process is seen by all
            values = self.dist.all_sum(values.clone())
        if bool(values.isfinite().all()):
            if self.position.step == 0:
                self.warn_of_loss_scales(
                    dict(zip(losses, values.tolist()[: len(losses)], strict=True))
                )
            return True
        pos = self.position
        bad = ", ".join(
            f"{name} loss is {value}"
            for name, value in zip(named, values.tolist(), strict=True)
            if not math.isfinite(value)
        )
        where = f"at step {pos.step + 1} (epoch {pos.epoch + 1}, batch {pos.batch + 1})"
        if self.settings.nonfinite == "stop":
            raise ValueError(
                f"{bad} {where}; train.nonfinite=stop ends the run "
                "(train.nonfinite=skip skips such steps)"
            )
        pos.skipped += 1
        pos.epoch_skipped += 1
        if pos.epoch_skipped == 1:
            self.console.log(
                f"warning: {bad} {where}: step skipped (train.nonfinite=skip); the epoch's "
                "skipped steps are counted in metrics.jsonl, the run's in summary.json"
            )
        return False

    def warn_of_loss_scales(self, losses: Mapping[str, float]) -> None:
        """At the first step: a warning when one task's loss is 1000× another's, so that its
        gradient would swamp the others' under a fixed weighting."""
        live = {t: v for t, v in losses.items() if v > 0}
        if len(live) < 2:
            return
        big, small = max(live, key=live.__getitem__), min(live, key=live.__getitem__)
        if live[big] < LOSS_SCALE_RATIO * live[small]:
            return
        self.console.log(
            f"warning: at the first step task {big!r} has loss {live[big]:.3g}, "
            f"{live[big] / live[small]:.3g}× that of task {small!r} ({live[small]:.3g}): its "
            "gradient will swamp the others'; standardise its targets "
            "(data.standardize_targets) or use a loss-balancing weighting (uncertainty, dwa, famo)"
        )

    def transfer_log(self) -> dict[str, Any]:
        """The last step's transfer terms, for the train log (nothing without transfer)."""
        last = getattr(self, "last_transfer", None)
        return {"transfer": {k: float(v) for k, v in last.items()}} if last else {}

    def average_gradients(self) -> None:
        """Under torchrun: every trainable gradient averaged across processes (one all-reduce)."""
        if self.dist is not None:
            self.dist.average_gradients([*self.model.parameters(), *self.weighting.parameters()])

    def agreed_stop(self, signum: int | None) -> int | None:
        """A stop request every process acts on at the same step (the largest signal number
        asked anywhere), so no process waits in a collective for one that has left."""
        if self.dist is None:
            return signum
        flag = torch.tensor([signum or 0], dtype=torch.int64, device=self.device)
        value = int(self.dist.all_max(flag))
        return value or None

    def finish_step(self, batch: Batch) -> None:
        """Clip, step the optimizer and the schedule, let the strategy look at the result."""
        if self.settings.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.weighting.after_step(lambda: self.recompute(batch))
        self.schedule.step()

    def backward_transfer(self, total: Tensor, cut: Any) -> None:
        """Backward of the transfer terms, before the strategy's own backward pass.

        The graph is kept for the strategy. Inside a feature split the terms' gradient stops at
        the tasks' leaves; it is carried on into the encoder here, so a transfer term reaches
        the shared parameters whatever the strategy.
        """
        self.scaler.scale(total).backward(retain_graph=True)
        if cut is not None:
            cut.carry_to_root()

    def part_losses(
        self, output: MultiTaskOutput, batch: Batch, parts: int
    ) -> list[dict[str, Tensor]]:
        """The task losses of ``parts`` disjoint parts of the batch, under the same autocast as
        the step's own losses."""
        with self.autocast():
            return part_losses(output, batch, self.tasks, parts)

    def part_forward(self, batch: Batch, parts: int) -> list[dict[str, Tensor]]:
        """The task losses of ``parts`` disjoint parts of the batch, a forward pass each."""
        out = []
        for part in part_batches(batch, parts):
            with self.autocast():
                output = self.model(part.inputs, part.lengths)
                out.append(task_losses(output, part, self.tasks))
        return out

    def heldout(self) -> dict[str, Tensor]:
        """Task losses, with gradient, of a held-out batch of training samples (bilevel
        strategies' look-ahead batch): ``batch_size`` samples drawn at random, a function of
        the seed and the step only, so a resumed run draws the same ones (this process's shard
        of them under torchrun)."""
        train = self.settings
        generator = torch.Generator().manual_seed(train.seed * 1_000_003 + self.position.step)
        n = len(self.splits.train)
        index = torch.randperm(n, generator=generator)[: min(train.batch_size, n)]
        if self.dist is not None and len(index) >= self.dist.world:
            index = self.dist.shard(index)
        batch = self.splits.train.batch(index).to(self.device, non_blocking=True)
        counts = label_counts(batch, self.tasks)
        with self.autocast():
            output = self.model(batch.inputs, batch.lengths)
            losses = task_losses(output, batch, self.tasks, counts)
        if self.dist is not None:  # the same tasks everywhere: the global batch's means
            local = {t: n for t, n in zip(self.tasks, counts, strict=True) if n > 0}
            losses, _ = self.dist.global_losses(
                losses, local, self.tasks, lambda t: output.preds[t].sum() * 0, self.device
            )
        return losses

    def recompute(self, batch: Batch) -> dict[str, Tensor]:
        """The batch's task losses under the updated model, without gradient."""
        with torch.no_grad(), self.autocast():
            counts = label_counts(batch, self.tasks)
            losses = task_losses(self.model(batch.inputs, batch.lengths), batch, self.tasks, counts)
        if self.dist is not None:  # the global batch's losses, as the strategy saw in backward
            local = {t: n for t, n in zip(self.tasks, counts, strict=True) if n > 0}
            losses, _ = self.dist.global_losses(losses, local, self.tasks, device=self.device)
        return losses

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Mixed precision on CUDA when asked for; a no-op otherwise."""
        if not self.settings.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def end_epoch(
        self, logger: RunLogger, sums: Mapping[str, Tensor], counts: Mapping[str, int]
    ) -> None:
        """Evaluate on validation data, log, keep the best and the last checkpoint."""
        pos, train = self.position, self.settings
        train_loss = {t: float(sums[t]) / counts[t] for t in self.tasks if counts[t]}
        if self.dist is not None:  # running statistics (BatchNorm): rank 0's everywhere, as
            self.dist.broadcast_buffers(self.model)  # DDP's broadcast_buffers does
        val = evaluate(
            self.model,
            self.splits.val,
            self.tasks,
            train.eval_batch_size,
            self.device,
            self.target_stats,
        )
        skipped = {"skipped_steps": pos.epoch_skipped} if pos.epoch_skipped else {}
        logger.log("epoch", pos.step, epoch=pos.epoch, train_loss=train_loss, val=val, **skipped)
        if logger.writer is not None:
            self.log_previews(logger, pos.step)
        for callback in self.callbacks:
            callback(self, pos.epoch, val)
        pos.history.append({"epoch": pos.epoch, "train_loss": train_loss, "val": val})
        score = self.score(val)
        if math.isnan(score):  # a NaN never counts as the best
            score = math.inf
        improved = pos.best is None or score < pos.best or math.isinf(pos.best)
        if improved:
            pos.best, pos.best_epoch = score, pos.epoch
        self.track_patience(score)
        pos.epoch, pos.batch, pos.epoch_skipped = pos.epoch + 1, 0, 0
        if improved:
            self.save("best", self.shuffle.get_state())
        self.save("last", self.shuffle.get_state())
        summary = " ".join(
            f"{t}:{m}={val[t][m]:.4f}" for t, m in self.primary_metrics() if t in val
        )
        note = f" ({skipped['skipped_steps']} steps skipped)" if skipped else ""
        self.console.log(f"epoch {pos.epoch}/{train.epochs} val {summary}{note}")

    def log_previews(self, logger: RunLogger, step: int) -> None:
        """TensorBoard images, per dense task: the first :data:`PREVIEWS` validation images'
        input, ground truth and prediction side by side, and the task's soft attention masks
        where the model has per-pixel ones (MTAN's last decoder level), channel-averaged."""
        dense = {name: task for name, task in self.tasks.items() if task.is_dense}
        val = self.splits.val
        if not dense or len(val) == 0:
            return
        batch = val.batch(torch.arange(min(PREVIEWS, len(val)))).to(self.device)
        mode = self.model.training
        self.model.eval()
        with torch.no_grad(), self.autocast():
            output = self.model(batch.inputs, batch.lengths)
        self.model.train(mode)
        assert isinstance(batch.inputs, Tensor)
        for name, task in dense.items():
            preds = output.preds[name].float()
            rows = prediction_rows(
                task, batch.inputs, batch.labels[name], preds, batch.label_mask[name]
            )
            logger.image(f"predictions/{name}", prediction_grid(rows), step)
            masks = output.attention.get(name)
            if masks is not None and masks.dim() == 4:
                logger.image(f"attention/{name}", mask_grid(masks), step)

    def track_patience(self, score: float) -> None:
        """Early stopping (``train.early_stopping``): count the epochs since the score last
        improved on the reference by more than ``min_delta``; after ``patience`` of them,
        mark the run stopped (at the end of this epoch, after its checkpoints)."""
        rule, pos = self.settings.early_stopping, self.position
        if rule is None:
            return
        if pos.reference is None or score < pos.reference - rule.min_delta:
            pos.reference, pos.stale = score, 0
        else:
            pos.stale += 1
        if pos.stale >= rule.patience:
            pos.stopped_early = pos.epoch + 1
            self.console.log(
                f"early stopping after epoch {pos.epoch + 1}: no improvement above "
                f"min_delta={rule.min_delta} in {rule.patience} epoch(s)"
            )

    def primary_metrics(self) -> Iterator[tuple[str, str]]:
        """(task, its primary metric) for every task."""
        return ((name, task.primary_metric) for name, task in self.tasks.items())

    # ----------------------------------------------------------- checkpoints & summary

    def save(self, name: str, shuffle_state: Tensor) -> None:
        """Write checkpoint ``name`` (``last`` or ``best``) if the run has a directory.

        Under torchrun rank 0 writes and every process learns whether it could, so a failed
        write ends every process with the same error instead of leaving them in a collective.
        """
        failure: OSError | None = None
        try:
            self._write(name, shuffle_state)
        except OSError as err:
            if self.dist is None:
                raise
            failure = err
        if self.dist is not None:
            flag = torch.tensor([failure is not None], dtype=torch.int64, device=self.device)
            if int(self.dist.all_max(flag)):
                raise failure or CheckpointWriteError(
                    f"rank 0 could not write checkpoint {name!r}; see its error"
                )

    def _write(self, name: str, shuffle_state: Tensor) -> None:
        if self.run_dir is None:
            return
        pos = self.position
        resume = {
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "shuffle": shuffle_state,
            "weighting": self.weighting.extra_state(),
            "epoch_sums": dict(self.epoch_sums) if pos.batch else {},
            "epoch_counts": dict(self.epoch_counts) if pos.batch else {},
        }
        meta = {
            "tasks": [asdict(t) for t in self.tasks.values()],
            "epoch": pos.epoch,
            "batch": pos.batch,
            "step": pos.step,
            "best": pos.best,
            "best_epoch": pos.best_epoch,
            "history": pos.history,
            "skipped_steps": pos.skipped,
            "epoch_skipped_steps": pos.epoch_skipped,
            "stale_epochs": pos.stale,
            "patience_reference": pos.reference,
            "stopped_early": pos.stopped_early,
            # what bit-exact continuation also depends on (see :meth:`restore`)
            "threads": torch.get_num_threads(),
            "device": str(self.device),
        }
        save_checkpoint(
            self.run_dir / "checkpoints" / name,
            self.model.state_dict(),
            self.weighting.state_dict(),
            resume,
            meta,
        )

    def restore(self, checkpoint: Checkpoint) -> None:
        """Continue from ``checkpoint`` (see the module docstring)."""
        self.model.load_state_dict(checkpoint.model)
        self.weighting.load_state_dict(checkpoint.weighting)
        resume = checkpoint.resume
        self.optimizer.load_state_dict(resume["optimizer"])
        self.schedule.load_state_dict(resume["schedule"])
        self.scaler.load_state_dict(resume["scaler"])
        self.weighting.load_extra_state(resume["weighting"])
        self.shuffle.set_state(resume["shuffle"])
        set_rng_state(resume["rng"])
        if self.dist is not None and self.dist.rank > 0:  # each process its own stream again
            torch.manual_seed(
                self.settings.seed + 1_000_003 * checkpoint.meta["step"] + self.dist.rank
            )
        self.epoch_sums = {t: v.to(self.device) for t, v in resume["epoch_sums"].items()}
        self.epoch_counts = dict(resume["epoch_counts"])
        meta = checkpoint.meta
        self.warn_if_not_reproducible(meta)
        self.position = Position(
            meta["epoch"],
            meta["batch"],
            meta["step"],
            meta["best"],
            meta["best_epoch"],
            list(meta["history"]),
            meta.get("skipped_steps", 0),
            meta.get("epoch_skipped_steps", 0),
            meta.get("stale_epochs", 0),
            meta.get("patience_reference"),
            meta.get("stopped_early"),
        )

    def warn_if_not_reproducible(self, meta: Mapping[str, Any]) -> None:
        """Warn (once, at resume) when the checkpoint was written under another intra-op thread
        count or device: the run continues correctly, but floating-point reductions are then
        summed in another order, so it will not end bit-identical to an uninterrupted run.
        Checkpoints written before these were recorded are taken as they come."""
        then = {"threads": meta.get("threads"), "device": meta.get("device")}
        now = {"threads": torch.get_num_threads(), "device": str(self.device)}
        changed = [k for k in now if then[k] is not None and then[k] != now[k]]
        if not changed:
            return
        fix = f"; set train.threads={then['threads']} to match" if "threads" in changed else ""
        self.console.log(
            f"warning: the checkpoint was written with {then['threads']} intra-op thread(s) on "
            f"{then['device']}, this process has {now['threads']} on {now['device']}: training "
            f"continues, but will not end bit-identical to an uninterrupted run{fix}"
        )

    def early_stopping_summary(self) -> dict[str, Any]:
        """summary.json's record of the rule and whether (after which epoch) it stopped."""
        rule = self.settings.early_stopping
        if rule is None:
            return {}
        stopped = {"stopped_after_epoch": self.position.stopped_early}
        return {"early_stopping": {**rule.model_dump(), **stopped}}

    def finish(self, train_time: float, train_samples: int) -> dict[str, Any]:
        """Test the selected model (best by validation, or last) and write summary.json."""
        train = self.settings
        selected = "last"
        if train.test_on == "best" and self.run_dir is not None:
            best = load_reporting(self.run_dir / "checkpoints" / "best", self.console.log)
            self.model.load_state_dict(best.model)
            selected = "best"
        results = {}
        for split in ("val", "test"):
            data = getattr(self.splits, split)
            results[split] = evaluate(
                self.model, data, self.tasks, train.eval_batch_size, self.device, self.target_stats
            )
        summary = {
            "name": self.name,
            "tasks": results["test"],
            "val": results["val"],
            "selected": selected,
            "best_epoch": self.position.best_epoch,
            "epochs": self.position.epoch,
            "steps": self.position.step,
            "skipped_steps": self.position.skipped,
            **self.early_stopping_summary(),
            "train_samples_per_s": train_samples / train_time if train_time else None,
            "parameters": count_parameters(self.model),
            "data": self.splits.info,
        }
        if self.run_dir is not None:
            write_json_atomic(self.run_dir / "summary.json", summary)
        return summary


def load_last(run_dir: Path) -> Checkpoint:
    """The last checkpoint of a run directory."""
    return load_checkpoint(run_dir / "checkpoints" / "last")
