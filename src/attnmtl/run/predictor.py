"""Predicting with a trained model: the run's input preprocessing, batched forward passes,
and outputs in the units a user wants.

Axes: N samples, B batch, T steps, C classes / outputs.

Per task, :func:`predict` returns:

==========  ===========================================================================
binary      ``class`` (N,) 0/1 and ``probability`` (N,) of class 1
multiclass  ``class`` (N,) ids and ``probabilities`` (N, C) (softmax)
multilabel  ``labels`` (N, C) 0/1 and ``probabilities`` (N, C) (sigmoid per label)
regression  ``value`` (N,) or (N, C), in natural units (a run's target standardisation and a
            ``relative_to`` target's window anchor undone)
==========  ===========================================================================

and, with ``attention=True``, ``attention``: the task's weights over the input's steps (N, T)
(or (N, E) over experts for a gated model), where the model returns them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from attnmtl.core.tasks import Task
from attnmtl.data.files import standardize_inputs
from attnmtl.data.splits import target_stats
from attnmtl.data.windows import Window, to_anchor, transform_windows
from attnmtl.data.windows import anchors as window_anchors

Predictions = dict[str, dict[str, Tensor]]  # task → what → values


@dataclass
class Preprocessing:
    """What a run did to its data that prediction must do (and undo) too.

    Attributes:
        layout: ``sequence``, ``image`` or ``table``.
        input_stats: (mean, std) per feature (channel) of a files run with ``standardize``;
            raw inputs are scaled with them. None: inputs are used as given.
        target_stats: regression task → (mean, std) its targets were standardised by;
            predictions are mapped back to natural units.
        classes: task → its declared class names (files runs), in id order.
        window: the time-series transform of each window (files runs with ``window``).
        relative: regression task → the input feature (column) index whose window anchor its
            targets are relative to (``relative_to``).
    """

    layout: str
    input_stats: tuple[Tensor, Tensor] | None = None
    target_stats: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    classes: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    window: Window | None = None
    relative: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        layout: str,
        info: Mapping[str, Any],
        tasks: Mapping[str, Task],
        data: Mapping[str, Any],
    ) -> Preprocessing:
        """From a data set's ``info`` (the statistics it recorded) and the config's data
        section (declared classes)."""
        stats = info.get("standardize")
        inputs = None
        if isinstance(stats, Mapping):
            inputs = (torch.tensor(stats["mean"]), torch.tensor(stats["std"]))
        targets = target_stats(info, tasks)
        declared = data.get("tasks")
        if not isinstance(declared, Mapping):
            declared = {}
        classes = {
            name: tuple(spec["classes"])
            for name, spec in declared.items()
            if isinstance(spec, Mapping) and spec.get("classes")
        }
        window = info.get("window")
        relative = info.get("relative_to")
        return cls(
            layout,
            inputs,
            targets,
            classes,
            None if not isinstance(window, Mapping) else Window.parse(window),
            {}
            if not isinstance(relative, Mapping)
            else {str(k): int(v["index"]) for k, v in relative.items()},
        )

    def prepare(self, inputs: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Raw inputs (as the user's files hold them) → what the model reads."""
        if self.window is not None and self.window.changes_inputs:
            inputs = transform_windows(inputs, lengths, self.window)
        if self.input_stats is None:
            return inputs
        return standardize_inputs(inputs, lengths, self.layout, *self.input_stats)

    def anchors(self, inputs: Tensor, lengths: Tensor | None = None) -> dict[str, Tensor]:
        """Task → (N, 2) anchors of raw ``inputs`` for each ``relative_to`` task."""
        return window_anchors(inputs, lengths, self.layout, self.window, self.relative)

    def unprepare(self, inputs: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The inverse of :meth:`prepare` (model inputs → raw); a window transform has no
        inverse (a window's level is gone): raw inputs are then its data set's
        ``meta['raw_inputs']``."""
        if self.window is not None and self.window.changes_inputs:
            raise ValueError(
                "the run's window transform cannot be undone; read the raw inputs from the "
                "data set's meta['raw_inputs']"
            )
        if self.input_stats is None:
            return inputs
        mean, std = self.input_stats
        shape = (1, -1, 1, 1) if self.layout == "image" else (-1,)
        raw = inputs * std.view(shape) + mean.view(shape)
        if lengths is not None:
            keep = torch.arange(inputs.shape[1]) < lengths[:, None]
            raw = torch.where(keep[..., None], raw, inputs)
        return raw


def postprocess(
    task: Task,
    pred: Tensor,
    stats: tuple[Tensor, Tensor] | None,
    anchor: Tensor | None = None,
) -> dict[str, Tensor]:
    """One task's raw output (B, out) → what a user wants (see the module table);
    ``anchor`` (B, 2): a ``relative_to`` task's per-sample window anchor."""
    if task.kind == "binary":
        probability = torch.sigmoid(pred.squeeze(-1))
        return {"class": (probability >= 0.5).long(), "probability": probability}
    if task.kind == "multiclass":
        probabilities = torch.softmax(pred, dim=-1)
        return {"class": probabilities.argmax(-1), "probabilities": probabilities}
    if task.kind == "multilabel":
        probabilities = torch.sigmoid(pred)
        return {"labels": (probabilities >= 0.5).long(), "probabilities": probabilities}
    value = pred
    if stats is not None:
        mean, std = stats
        value = value * std.to(value) + mean.to(value)
    if anchor is not None:
        value = to_anchor(value, anchor)
    return {"value": value.squeeze(-1) if task.size == 1 else value}


@torch.inference_mode()
def predict(
    model: nn.Module,
    tasks: Mapping[str, Task],
    preprocessing: Preprocessing,
    inputs: Tensor,
    lengths: Tensor | None = None,
    *,
    attention: bool = False,
    prepared: bool = False,
    batch_size: int = 1024,
    progress: Callable[[int], Any] | None = None,
    anchors: Mapping[str, Tensor] | None = None,
) -> Predictions:
    """Every task's predictions for ``inputs`` (N, ...) (see the module table).

    Args:
        model: the trained model (put in eval mode here).
        tasks: the run's tasks.
        preprocessing: the run's :class:`Preprocessing`.
        inputs: raw inputs as the run's files hold them, or (``prepared``) as its data set
            hands them to the model.
        lengths: (N,) real sequence lengths of right-padded sequences, or None.
        attention: also return each task's attention weights.
        prepared: ``inputs`` are already preprocessed (a data set's split).
        batch_size: samples per forward pass.
        progress: called with the number of samples done after each batch.
        anchors: with ``prepared``, the data set's per-sample anchors of its ``relative_to``
            tasks (``MultiTaskDataset.anchors``); from raw inputs they are computed here.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}; expected >= 1")
    if prepared:
        missing = [t for t in preprocessing.relative if t not in (anchors or {})]
        if missing:
            raise ValueError(
                f"task(s) {missing} are predicted relative to each window: pass the data "
                "set's anchors= with prepared inputs, or raw inputs"
            )
    elif preprocessing.relative:
        anchors = preprocessing.anchors(inputs.float(), lengths)
    model.eval()
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    if first is not None and not _token_ids(inputs, preprocessing):
        inputs = inputs.to(first.dtype)  # float64 or integer arrays from numpy and pandas
    x = inputs if prepared else preprocessing.prepare(inputs, lengths)
    raw: dict[str, list[Tensor]] = {t: [] for t in tasks}  # per batch, the model's outputs
    weights: dict[str, list[Tensor]] = {t: [] for t in tasks}
    for start in range(0, len(x), batch_size):
        chunk = x[start : start + batch_size].to(device)
        lens = None if lengths is None else lengths[start : start + batch_size].to(device)
        output = model(chunk, lens)
        for name in tasks:
            raw[name].append(output.preds[name])
            if attention and name in output.attention:
                weights[name].append(output.attention[name])
        if progress is not None:
            progress(min(start + batch_size, len(x)))
    predictions: Predictions = {}
    for name, task in tasks.items():  # once over all the rows: fewer, larger operations
        stats = preprocessing.target_stats.get(name)
        anchor = (anchors or {}).get(name) if name in preprocessing.relative else None
        values = postprocess(task, torch.cat(raw[name]), stats, anchor)
        if weights[name]:
            values["attention"] = torch.cat(weights[name])
        predictions[name] = {k: v.cpu() for k, v in values.items()}
    return predictions


def _token_ids(inputs: Tensor, preprocessing: Preprocessing) -> bool:
    """Integer (B, T) inputs of a sequence run: token ids, kept as they are."""
    return (
        not inputs.is_floating_point() and inputs.dim() == 2 and preprocessing.layout == "sequence"
    )


def columns(
    tasks: Mapping[str, Task], preprocessing: Preprocessing, predictions: Predictions
) -> dict[str, list[Any]]:
    """Predictions as table columns, one row per input: ``TASK`` (the class — its declared
    name when there is one — or the value), ``TASK_probability`` (binary; multiclass: of the
    predicted class), ``TASK_p_CLASS`` per class, ``TASK_LABEL`` and ``TASK_p_LABEL`` per
    label (multilabel), ``TASK_K`` per output (regression), ``TASK_attention`` (a list)."""
    table: dict[str, list[Any]] = {}
    for name, task in tasks.items():
        values = predictions[name]
        names = preprocessing.classes.get(name) or tuple(range(task.size))
        if task.kind == "binary":
            names = preprocessing.classes.get(name) or (0, 1)
            table[name] = [names[i] for i in values["class"].tolist()]
            table[f"{name}_probability"] = values["probability"].tolist()
        elif task.kind == "multiclass":
            probabilities = values["probabilities"]
            table[name] = [names[i] for i in values["class"].tolist()]
            table[f"{name}_probability"] = probabilities.max(-1).values.tolist()
            for k, label in enumerate(names):
                table[f"{name}_p_{label}"] = probabilities[:, k].tolist()
        elif task.kind == "multilabel":
            for k, label in enumerate(names):
                table[f"{name}_{label}"] = values["labels"][:, k].tolist()
                table[f"{name}_p_{label}"] = values["probabilities"][:, k].tolist()
        elif values["value"].dim() == 1:
            table[name] = values["value"].tolist()
        else:
            for k in range(values["value"].shape[1]):
                table[f"{name}_{k}"] = values["value"][:, k].tolist()
        if "attention" in values:
            table[f"{name}_attention"] = values["attention"].flatten(1).tolist()
    return table
