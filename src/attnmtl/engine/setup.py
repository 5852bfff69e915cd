"""Building a run's parts from its config: device, seeding, data, model, optimizer, schedule."""

from __future__ import annotations

import inspect
import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from attnmtl.config import INJECTED, RunConfig, check_arguments
from attnmtl.data import DATASETS, DataSplits
from attnmtl.data.batch import Inputs
from attnmtl.models import MODELS, MultiTaskModel, MultiTaskOutput
from attnmtl.tasks import Task
from attnmtl.weighting import Weighting, create_weighting

T = TypeVar("T")


def construct(factory: Callable[..., T], kwargs: dict[str, Any], where: str) -> T:
    """``factory(**kwargs)``; a TypeError from a nested option becomes a one-line ValueError."""
    try:
        return factory(**kwargs)
    except TypeError as err:
        raise ValueError(f"{where}: {err}") from None


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"train.device={name!r}; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device={name!r} but CUDA is not available here")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"train.device={name!r}; expected auto, cpu, cuda or cuda:N")
    return device


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; optionally ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def build_data(config: RunConfig) -> DataSplits:
    """The configured data set, with the task-mask mode applied to its train and val splits.

    The test split keeps every label, so a task-mask run is scored on the same test labels as
    a fully labelled one.
    """
    factory = DATASETS.get(config.data.name)
    kwargs = check_arguments(factory, config.data.options(), "data", INJECTED["data"])
    splits: DataSplits = construct(factory, kwargs, f"data {config.data.name!r}")
    if config.data.task_mask == "one":
        seed = config.data.task_mask_seed
        splits = DataSplits(
            splits.train.one_task_per_sample(seed),
            splits.val.one_task_per_sample(seed + 1),
            splits.test,
            splits.info,
        )
    if config.data.label_fraction:
        splits = keep_label_fraction(splits, config.data.label_fraction, config.data.task_mask_seed)
    for split, data in splits.items():
        if len(data) == 0:
            raise ValueError(f"data: the {split} split is empty")
    missing = [name for name, n in splits.train.label_counts().items() if n == 0]
    if missing:
        raise ValueError(f"data: task(s) {missing} have no labelled training sample")
    return splits


def keep_label_fraction(
    splits: DataSplits, fractions: Mapping[str, float], seed: int = 0
) -> DataSplits:
    """Keep a random ``fractions[task]`` of each task's train and val labels (at least one).

    The few-label case: the samples stay (their other labels and their inputs still serve),
    the task's label is dropped from the rest. The test split keeps every label.
    """
    for task, fraction in fractions.items():
        if task not in splits.tasks:
            raise ValueError(
                f"data.label_fraction: unknown task {task!r}; expected one of: "
                f"{', '.join(splits.tasks)}"
            )
        if not 0 < fraction <= 1:
            raise ValueError(f"data.label_fraction.{task}={fraction!r}; expected 0 < f <= 1")
    gen = torch.Generator().manual_seed(seed)
    parts = []
    for data in (splits.train, splits.val):
        masks = {}
        for task, fraction in fractions.items():
            labelled = data.label_mask[task].nonzero().squeeze(1)  # (N_task,)
            keep = max(1, round(fraction * len(labelled))) if len(labelled) else 0
            chosen = labelled[torch.randperm(len(labelled), generator=gen)[:keep]]
            masks[task] = torch.zeros(len(data), dtype=torch.bool).index_fill_(0, chosen, True)
        parts.append(data.with_label_mask(masks))
    return DataSplits(parts[0], parts[1], splits.test, splits.info)


class SingleTaskAdapter(MultiTaskModel):
    """Presents a one-output model (e.g. the seed's ``AttnRNN``) as a one-task model.

    The wrapped model returns logits, or (logits, attention) when it takes ``return_weights``.
    All its parameters count as shared (there is one task).
    """

    def __init__(self, net: nn.Module, task: Task) -> None:
        super().__init__([task])
        self.net = net
        self.task = task.name
        self.weights = "return_weights" in inspect.signature(net.forward).parameters

    def task_modules(self, task: str) -> list[nn.Module]:
        return []

    def forward(self, inputs: Inputs, lengths: Tensor | None = None) -> MultiTaskOutput:
        if self.weights:
            preds, attention = self.net(inputs, lengths, return_weights=True)
            return MultiTaskOutput({self.task: preds}, {self.task: attention})
        return MultiTaskOutput({self.task: self.net(inputs, lengths)}, {})


def build_model(config: RunConfig, splits: DataSplits) -> nn.Module:
    """The configured model for the data set's tasks and inputs, checked on two samples."""
    tasks = list(splits.tasks.values())
    factory = MODELS.get(config.model.name)
    kwargs = check_arguments(factory, config.model.options(), "model", INJECTED["model"])
    params = inspect.signature(factory).parameters
    available: dict[str, Any] = {
        "tasks": tasks,
        "input_shape": splits.train.input_shape,
        "layout": splits.train.layout,
        "input_dim": splits.train.input_dim,
    }
    for key, value in available.items():
        if key in params and key not in kwargs:
            kwargs[key] = value
    model: nn.Module = construct(factory, kwargs, f"model {config.model.name!r}")
    if not isinstance(model, MultiTaskModel) and not hasattr(model, "shared_parameters"):
        if len(tasks) != 1:
            raise ValueError(
                f"model {config.model.name!r} predicts one output but the data set has tasks "
                f"{[t.name for t in tasks]}; use data.tasks to pick one, or a multi-task model"
            )
        model = SingleTaskAdapter(model, tasks[0])
    check_outputs(model, splits, config.model.name)
    return model


def check_outputs(model: nn.Module, splits: DataSplits, name: str) -> None:
    """Raise ValueError unless the model predicts every task with the task's width."""
    probe = splits.train.batch(torch.arange(min(2, len(splits.train))))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model(probe.inputs, probe.lengths)
    except (TypeError, RuntimeError) as err:  # e.g. an option of the wrong type, a wrong shape
        first = " ".join(str(err).split())[:300]
        raise ValueError(f"model {name!r} fails on the data's inputs: {first}") from None
    model.train(was_training)
    for task in splits.tasks.values():
        pred = output.preds.get(task.name)
        if pred is None:
            raise ValueError(
                f"model {name!r} does not predict task {task.name!r} (it predicts "
                f"{sorted(output.preds)})"
            )
        if pred.shape != (len(probe), task.out_dim):
            raise ValueError(
                f"model {name!r} predicts {tuple(pred.shape)} for task "
                f"{task.name!r}; expected (B, {task.out_dim})"
            )


def build_weighting(config: RunConfig, tasks: Sequence[str]) -> Weighting:
    """The configured balancing strategy."""
    from attnmtl.weighting import WEIGHTINGS

    factory = WEIGHTINGS.get(config.weighting.name)
    kwargs = check_arguments(
        factory, config.weighting.options(), "weighting", INJECTED["weighting"]
    )
    return construct(
        lambda **kw: create_weighting(config.weighting.name, tasks, **kw),
        kwargs,
        f"weighting {config.weighting.name!r}",
    )


def build_optimizer(
    config: RunConfig, model: nn.Module, weighting: Weighting
) -> torch.optim.Optimizer:
    """AdamW / Adam / SGD over the model, plus the strategy's parameters without decay."""
    opt = config.optimizer
    groups: list[dict[str, Any]] = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    extra = [p for p in weighting.parameters() if p.requires_grad]
    if extra:
        groups.append({"params": extra, "weight_decay": 0.0, "lr": opt.weighting_lr or opt.lr})
    if opt.name == "sgd":
        return torch.optim.SGD(
            groups,
            lr=opt.lr,
            momentum=opt.momentum,
            nesterov=opt.nesterov,
            weight_decay=opt.weight_decay,
        )
    cls = torch.optim.AdamW if opt.name == "adamw" else torch.optim.Adam
    return cls(groups, lr=opt.lr, betas=opt.betas, weight_decay=opt.weight_decay)


def build_schedule(
    config: RunConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The configured schedule, stepped once per optimizer step."""
    sched = config.schedule
    total = max(1, config.train.epochs * steps_per_epoch)
    if sched.name == "onecycle":
        max_lr = [group["lr"] for group in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=max_lr, total_steps=total, pct_start=sched.warmup or 0.3
        )
    warmup = int(sched.warmup * total)

    def factor(step: int) -> float:
        if sched.name == "constant":
            return 1.0
        if sched.name == "step":
            return float(sched.gamma ** (step // (sched.step_epochs * steps_per_epoch)))
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return sched.min_lr_ratio + (1 - sched.min_lr_ratio) * 0.5 * (
            1 + math.cos(math.pi * progress)
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def count_parameters(model: nn.Module) -> dict[str, Any]:
    """Total, trainable, shared and per-task parameter counts."""
    counts: dict[str, Any] = {
        "total": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    shared = getattr(model, "shared_parameters", None)
    if shared is not None:
        counts["shared"] = sum(p.numel() for p in shared())
        tasks = getattr(model, "tasks", None)
        if isinstance(tasks, dict):
            counts["per_task"] = {
                t: sum(p.numel() for p in model.task_parameters(t))  # type: ignore[operator]
                for t in tasks
            }
    return counts
