"""Building a run's parts from its config, and loading finished runs (written once here).

From a config: device, seeding, data, model, weighting, optimizer, schedule. From a run
directory: :func:`load_run` rebuilds a run's data and model from its ``config.yaml`` and loads a
checkpoint's weights (safetensors and JSON only, never a pickle). Teachers, attention-fusion
sources (:func:`source_encoders`), ``attnmtl eval`` and the report all load runs through it; a
model never reads a run directory itself — this layer hands it modules.
"""

from __future__ import annotations

import inspect
import math
import random
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from attnmtl.core.batch import Inputs
from attnmtl.core.tasks import Task
from attnmtl.data import DATASETS, DataSplits
from attnmtl.models import MODELS, MultiTaskModel, MultiTaskOutput
from attnmtl.run.checkpoint import Checkpoint, load_checkpoint
from attnmtl.run.config import (
    INJECTED,
    RUN_SOURCES,
    RunConfig,
    check_arguments,
    parse_config,
    read_yaml,
)
from attnmtl.run.predictor import Predictions, Preprocessing, predict
from attnmtl.transfer.teacher import freeze
from attnmtl.weighting import WEIGHTINGS, Weighting, create_weighting

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
    counts = {split: data.label_counts() for split, data in splits.items()}
    missing = [name for name, n in counts["train"].items() if n == 0]
    if missing:
        shown = "; ".join(
            f"{name!r}: " + ", ".join(f"{split} {counts[split][name]}" for split in counts)
            for name in missing
        )
        raise ValueError(
            f"data: task(s) {missing} have no labelled training sample (labelled rows: {shown}); "
            "label some training rows or remove the task from the data's tasks"
        )
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
    if (  # a table row is no sequence: its default encoder is an MLP over the features
        splits.train.layout == "table"
        and "encoder" in params
        and not {"encoder", "encoder_options"} & set(kwargs)
    ):
        kwargs["encoder"] = "mlp"
    if RUN_SOURCES in kwargs:  # run directories in the config: the frozen runs' encoders
        checkpoint = kwargs.pop("checkpoint", "best")
        kwargs[RUN_SOURCES] = source_encoders(list(kwargs[RUN_SOURCES]), checkpoint)
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
        spatial = tuple(probe.labels[task.name].shape[-2:]) if task.is_dense else ()
        if pred.shape != (len(probe), task.out_dim, *spatial):
            shape = ", ".join(["B", str(task.out_dim), *map(str, spatial)])
            raise ValueError(
                f"model {name!r} predicts {tuple(pred.shape)} for task "
                f"{task.name!r}; expected ({shape})"
            )


def build_weighting(config: RunConfig, tasks: Sequence[str]) -> Weighting:
    """The configured balancing strategy."""
    factory = WEIGHTINGS.get(config.weighting.name)
    kwargs = check_arguments(
        factory, config.weighting.options(), "weighting", INJECTED["weighting"]
    )
    return construct(
        lambda **kw: create_weighting(config.weighting.name, tasks, **kw),
        kwargs,
        f"weighting {config.weighting.name!r}",
    )


def layer_decay_groups(
    model: nn.Module, trainable: list[nn.Parameter], lr: float, decay: float
) -> list[dict[str, Any]]:
    """Parameter groups with layer-wise learning rates: a parameter at depth d of a module's
    ``layer_depths()`` (id → depth, deepest depth D) trains at lr × decay^(D − d); the rest of
    the model at lr."""
    depths: dict[int, tuple[int, int]] = {}
    for module in model.modules():
        declared = getattr(module, "layer_depths", None)
        if callable(declared):
            table, top = declared()
            depths.update({pid: (d, top) for pid, d in table.items()})
    if not depths:
        raise ValueError(
            f"optimizer.layer_decay={decay!r}: model {type(model).__name__} has no encoder "
            "with layers to decay over; expected a pretrained encoder (encoder: hf)"
        )
    by_scale: dict[int, list[nn.Parameter]] = {}
    for p in trainable:
        depth, top = depths.get(id(p), (0, 0))
        by_scale.setdefault(top - depth, []).append(p)
    return [
        {"params": params, "lr": lr * decay**steps} for steps, params in sorted(by_scale.items())
    ]


def build_optimizer(
    config: RunConfig, model: nn.Module, weighting: Weighting
) -> torch.optim.Optimizer:
    """AdamW / Adam / SGD over the model, plus the strategy's parameters without decay."""
    opt = config.optimizer
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups: list[dict[str, Any]] = (
        [{"params": trainable}]
        if opt.layer_decay is None
        else layer_decay_groups(model, trainable, opt.lr, opt.layer_decay)
    )
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


# ------------------------------------------------------------------ finished runs

CHECKPOINTS = ("best", "last")


@dataclass
class LoadedRun:
    """A run's config, data, model (eval mode, ``checkpoint``'s weights) and checkpoint."""

    run_dir: Path
    config: RunConfig
    splits: DataSplits
    model: MultiTaskModel
    checkpoint: Checkpoint

    @property
    def tasks(self) -> dict[str, Task]:
        """Task name → :class:`~attnmtl.core.tasks.Task`, as the run was trained on."""
        return dict(self.splits.tasks)

    @property
    def preprocessing(self) -> Preprocessing:
        """The input statistics, target standardisation and class names the run used."""
        return Preprocessing.of(
            self.splits.train.layout, self.splits.info, self.tasks, self.config.data.options()
        )

    def predict(
        self,
        inputs: Tensor,
        lengths: Tensor | None = None,
        *,
        attention: bool = False,
        prepared: bool = False,
        batch_size: int = 1024,
        anchors: Mapping[str, Tensor] | None = None,
    ) -> Predictions:
        """Per task, class ids and probabilities or values in natural units (and attention
        weights on request) for raw ``inputs`` as the run's files hold them, or ``prepared``
        ones as its data set gives them, with its ``anchors`` for ``relative_to`` tasks (see
        :func:`attnmtl.run.predictor.predict`)."""
        return predict(
            self.model,
            self.tasks,
            self.preprocessing,
            inputs,
            lengths,
            attention=attention,
            prepared=prepared,
            batch_size=batch_size,
            anchors=anchors,
        )


def load_run_config(run_dir: Path) -> RunConfig:
    """The resolved config saved in a run directory."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ValueError(f"{run_dir}: not a run directory (no config.yaml)")
    return parse_config(read_yaml(path))


def load_run(
    run_dir: str | Path,
    checkpoint: str = "best",
    device: torch.device | str = "cpu",
    *,
    splits: DataSplits | None = None,
    data_name: str | None = None,
    fork_rng: bool = True,
) -> LoadedRun:
    """The run at ``run_dir`` with its ``checkpoint`` (``best`` or ``last``) weights.

    Args:
        run_dir: a run directory (``config.yaml`` and ``checkpoints/``).
        checkpoint: ``best`` or ``last``.
        device: where the model goes.
        splits: other data to build the model for (same tasks, same input shapes); the run's
            own data by default.
        data_name: what ``splits`` is called in errors (the run's data set by default).
        fork_rng: build the model (which draws its initial weights) without moving torch's
            global generator; False draws from it as training would (kept where a run's
            published numbers were measured that way).
    """
    run_dir = Path(run_dir)
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"--checkpoint {checkpoint!r}; expected one of: {', '.join(CHECKPOINTS)}")
    config = load_run_config(run_dir)
    folder = run_dir / "checkpoints" / checkpoint
    if not folder.is_dir():
        raise ValueError(f"{run_dir}: no {checkpoint!r} checkpoint (expected {folder})")
    state = load_checkpoint(folder)
    with torch.random.fork_rng(devices=[], enabled=fork_rng):
        data = build_data(config) if splits is None else splits
        trained = [t["name"] for t in state.meta["tasks"]]
        if set(trained) < set(data.tasks):  # trained on some of the data's tasks (a baseline)
            data = data.only_tasks(trained)
        tasks = [asdict(task) for task in data.tasks.values()]
        if tasks != state.meta["tasks"]:
            raise ValueError(
                f"data {data_name or config.data.name!r} has tasks "
                f"{[t['name'] for t in tasks]}; the run was trained on "
                f"{[t['name'] for t in state.meta['tasks']]} (same names, kinds, sizes needed)"
            )
        model = build_model(config, data)
    try:
        model.load_state_dict(state.model)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1].strip()
        raise ValueError(f"the run's weights do not fit this data's inputs: {first}") from None
    model.to(device).eval()
    for module in model.modules():  # LoRA adapters folded in: the same function, served plain
        merge = getattr(module, "merge_adapters", None)
        if callable(merge):
            merge()
    return LoadedRun(run_dir, config, data, model, state)  # type: ignore[arg-type]


PRETRAINED_FOLDER = "pretrained"


def save_pretrained_encoder(run_dir: str | Path, checkpoint: str = "best") -> Path:
    """The ``checkpoint`` model's fine-tuned pretrained encoder (``encoder: hf``) written as a
    Hugging Face folder, ``RUN_DIR/pretrained`` (adapters merged, tokenizer files beside), in a
    temporary folder renamed into place; ValueError when the run has none."""
    run_dir = Path(run_dir)
    model = load_run(run_dir, checkpoint, fork_rng=True).model
    encoders = [m for m in model.modules() if callable(getattr(m, "save_pretrained", None))]
    if not encoders:
        raise ValueError(f"{run_dir}: its model has no pretrained encoder to save")
    final = run_dir / PRETRAINED_FOLDER
    partial = run_dir / f".{PRETRAINED_FOLDER}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    encoders[0].save_pretrained(partial)  # type: ignore[operator]
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    return final


def load_run_model(
    run_dir: str | Path, checkpoint: str = "best", device: torch.device | str = "cpu"
) -> nn.Module:
    """A finished run's model with its ``checkpoint`` weights."""
    return load_run(run_dir, checkpoint, device, fork_rng=False).model


def source_encoders(sources: list[str], checkpoint: str = "best") -> list[nn.Module]:
    """The frozen shared encoders of the runs at ``sources`` (attention fusion's sources)."""
    if not sources:
        raise ValueError("model.sources is empty; expected one or more run directories")
    encoders = []
    for path in sources:
        model = load_run_model(path, checkpoint)
        encoder = getattr(model, "encoder", None)
        if not isinstance(encoder, nn.Module) or not hasattr(encoder, "dim"):
            raise ValueError(
                f"source {path!r} ({type(model).__name__}) has no shared encoder to fuse; "
                "expected an attention_mtl or hard_sharing run"
            )
        encoders.append(freeze(encoder))
    return encoders
