"""Attention on example inputs: collect it from a model, draw it, log it to TensorBoard.

Axes: N examples, T time, F features, C channels, H height, W width, L attention positions,
Q queries, E experts.

What ``output.attention[task]`` holds depends on the model and the data layout, and decides the
figure:

============================  ==============================  ================================
weights per example           kind                            figure
============================  ==============================  ================================
(E,) of a mixture of experts  ``gate`` (``mmoe``)             bars: each expert's gate value
(L,) over a sequence (T, F)   ``sequence``                    the input over time, and below
                                                              it the weight of each position
(h, w) or (L,) over an image  ``spatial``                     the image, and the map over it
(L,) over a table row (F,)    ``sequence``                    the row as a signal of F steps
============================  ==============================  ================================

L may be shorter than T (a CNN that downsamples): position j then covers steps
[j·T/L, (j+1)·T/L). Over an image, (L,) weights with L = W are one weight per column (an RNN or
transformer reads an image's columns as steps); any other L is a flattened h × w map, h·w = L,
with h / w as close as possible to H / W. Weights with a query axis — (Q, L), (Q, h, w) — are
averaged over the queries. A 2-D (a, b) weight over an image is read as an (h, w) map when a / b
is within a factor 2 of H / W, and as (Q, L) otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor, nn

from attnmtl.core.batch import Batch
from attnmtl.core.tasks import Task
from attnmtl.report.figures import figure_rgb, new_figure

Kind = Literal["sequence", "spatial", "gate"]


@dataclass
class AttentionExamples:
    """A few inputs, every task's attention on them, their labels and the model's predictions.

    Attributes:
        layout: ``sequence``, ``image`` or ``table`` (how to read ``inputs``).
        inputs: (N, T, F) sequences, (N, C, H, W) images or (N, F) rows.
        lengths: real lengths of right-padded sequences, or None.
        attention: task → (N, ...) weights, as the model returned them.
        gates: True when the weights are a gate over experts (``mmoe``), not over the input.
        labels: task → one text per example ("-" where the example is not labelled).
        preds: task → one text per example.
        fusion: an attention-fusion model's weights over its sources (N, T, K), or None.
        gate_labels: task → a name per gated item, from the model's ``gate_labels(task)``
            where it has one (PLE: its task's and the shared experts); "expert e" otherwise.
    """

    layout: str
    inputs: np.ndarray
    lengths: list[int] | None
    attention: dict[str, np.ndarray]
    gates: bool
    labels: dict[str, list[str]]
    preds: dict[str, list[str]]
    fusion: np.ndarray | None = None
    gate_labels: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def kind(self) -> Kind:
        """How the weights relate to the inputs (see the module table)."""
        if self.gates:
            return "gate"
        return "spatial" if self.layout == "image" else "sequence"


def infer_layout(inputs: Tensor) -> str:
    """``sequence`` for (B, T, F), ``image`` for (B, C, H, W), ``table`` for (B, F)."""
    layouts = {2: "table", 3: "sequence", 4: "image"}
    if inputs.dim() not in layouts:
        raise ValueError(
            f"inputs of shape {tuple(inputs.shape)}; expected (B, F), (B, T, F) or (B, C, H, W)"
        )
    return layouts[inputs.dim()]


def is_gated(model: nn.Module) -> bool:
    """True when the model's attention is a gate over experts rather than over the input
    (the model declares it: :attr:`~attnmtl.models.MultiTaskModel.gated`)."""
    return bool(getattr(model, "gated", False))


def gate_labels(model: nn.Module, attention: Mapping[str, Tensor]) -> dict[str, list[str]]:
    """task → the names of the items its gate weighs, where the model names them."""
    name_of = getattr(model, "gate_labels", None)
    if not callable(name_of):
        return {}
    labels = {task: list(name_of(task)) for task in attention}
    return {t: names for t, names in labels.items() if len(names) == attention[t].shape[-1]}


def _text(value: Tensor) -> str:
    flat = value.reshape(-1)
    if flat.numel() == 1:
        number = float(flat[0])
        return str(int(number)) if number.is_integer() else f"{number:.2f}"
    if flat.numel() <= 4:
        return "[" + ",".join(_text(v) for v in flat) + "]"
    return f"[{flat.numel()} values]"


@torch.no_grad()
def collect_attention(
    model: nn.Module,
    batch: Batch,
    tasks: Mapping[str, Task] | None = None,
    layout: str | None = None,
    examples: int | None = None,
) -> AttentionExamples:
    """Run ``model`` in eval mode on (the first ``examples`` samples of) ``batch``.

    The model's training mode is restored afterwards; no random number is drawn (the forward
    pass runs in eval mode), so calling this during training leaves a run reproducible.

    Args:
        model: a multi-task model returning :class:`~attnmtl.models.MultiTaskOutput`.
        batch: inputs (one tensor), labels and label masks, on the model's device.
        tasks: the tasks, to print predictions in label space (classes, 0/1); raw outputs
            without.
        layout: ``sequence``, ``image`` or ``table``; inferred from the inputs' shape if None.
        examples: keep the first this many samples (all when None).
    """
    if not isinstance(batch.inputs, Tensor):
        raise ValueError(
            f"attention examples need one input tensor, got arrays {sorted(batch.inputs)}"
        )
    count = len(batch) if examples is None else min(examples, len(batch))
    if count < 1:
        raise ValueError(f"examples={examples!r}; expected >= 1 and a non-empty batch")
    inputs = batch.inputs[:count]
    lengths = None if batch.lengths is None else batch.lengths[:count]
    was_training = model.training
    model.eval()
    try:
        output = model(inputs, lengths)
    finally:
        model.train(was_training)
    labels, preds = {}, {}
    for name, pred in output.preds.items():
        task = None if tasks is None else tasks.get(name)
        values = pred.float().cpu() if task is None else task.predict(pred.float()).cpu()
        preds[name] = [_text(v) for v in values]
        if name in batch.labels:
            mask = batch.label_mask[name][:count].cpu()
            truth = batch.labels[name][:count].cpu()
            labels[name] = [_text(t) if m else "-" for t, m in zip(truth, mask, strict=True)]
    return AttentionExamples(
        layout=layout or infer_layout(inputs),
        inputs=inputs.detach().float().cpu().numpy(),
        lengths=None if lengths is None else [int(n) for n in lengths.cpu()],
        attention={name: w.detach().float().cpu().numpy() for name, w in output.attention.items()},
        gates=is_gated(model),
        labels=labels,
        preds=preds,
        fusion=(
            output.extras["fusion"].detach().float().cpu().numpy()
            if "fusion" in output.extras
            else None
        ),
        gate_labels=gate_labels(model, output.attention) if is_gated(model) else {},
    )


def fusion_figure(examples: AttentionExamples) -> Figure:
    """An attention-fusion model's weights over its sources: one heatmap (source × step) per
    example, padding left out."""
    assert examples.fusion is not None
    count = len(examples)
    figure = new_figure(11, 1.2 + 1.1 * count)
    axes = figure.subplots(count, 1, squeeze=False)[:, 0]
    sources = examples.fusion.shape[-1]
    for i, ax in enumerate(axes):
        weights = examples.fusion[i]  # (T, K)
        if examples.lengths is not None:
            weights = weights[: examples.lengths[i]]
        image = ax.imshow(weights.T, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_yticks(range(sources), [f"source {k}" for k in range(sources)], fontsize=8)
        ax.set_title(
            f"#{i}: mean weight per source " + ", ".join(f"{w:.2f}" for w in weights.mean(0)),
            fontsize=9,
        )
    axes[-1].set_xlabel("step")
    figure.colorbar(image, ax=list(axes), fraction=0.02)
    return figure


def attention_note(examples: AttentionExamples, task: str) -> str | None:
    """Why ``task``'s attention cannot be drawn (None when it can)."""
    weights = examples.attention.get(task)
    if weights is None:
        return "the model has no attention for this task"
    if weights.ndim < 2 or weights.shape[0] != len(examples):
        return f"attention of shape {weights.shape}; expected (N, ...) over the examples"
    if weights[0].size <= 1:
        return "one attention position: nothing to attend over (e.g. an MLP encoder)"
    return None


def reduce_queries(weights: np.ndarray, keep: int) -> tuple[np.ndarray, int]:
    """Average ``weights`` over its leading axes until ``keep`` axes remain; also the count."""
    queries = 1
    while weights.ndim > keep:
        queries *= weights.shape[0]
        weights = weights.mean(0)
    return weights, queries


def map_shape(length: int, height: int, width: int) -> tuple[int, int]:
    """The (h, w) of a flattened map of ``length`` positions over an H × W image.

    ``length == W``: one weight per column, (1, W). Otherwise the factorisation h · w = length
    whose h / w is closest to H / W (ties: the larger h).
    """
    if length == width:
        return 1, width
    target = math.log(height / width)
    best = (1, length)
    for h in range(1, length + 1):
        if length % h == 0:
            score = abs(math.log(h / (length // h)) - target)
            if score <= abs(math.log(best[0] / best[1]) - target):
                best = (h, length // h)
    return best


def spatial_map(weights: np.ndarray, height: int, width: int) -> tuple[np.ndarray, int]:
    """One example's weights as an (h, w) map over an H × W image, and the queries averaged."""
    if weights.ndim >= 2:
        a, b = weights.shape[-2:]
        if abs(math.log((a / b) / (height / width))) <= math.log(2) + 1e-9:
            return reduce_queries(weights, 2)
    flat, queries = reduce_queries(weights, 1)
    return flat.reshape(map_shape(flat.shape[0], height, width)), queries


def _title(examples: AttentionExamples, task: str, index: int) -> str:
    label = examples.labels.get(task, ["-"] * len(examples))[index]
    pred = examples.preds.get(task, ["?"] * len(examples))[index]
    return f"#{index}: true {label}, pred {pred}"


def attention_figure(examples: AttentionExamples, task: str) -> Figure:
    """``task``'s attention on every example (see the module table); check
    :func:`attention_note` first."""
    note = attention_note(examples, task)
    if note is not None:
        raise ValueError(f"task {task!r}: {note}")
    kind = examples.kind()
    if kind == "gate":
        return _gate_figure(examples, task)
    if kind == "spatial":
        return _spatial_figure(examples, task)
    return _sequence_figure(examples, task)


def _gate_figure(examples: AttentionExamples, task: str) -> Figure:
    weights, _ = reduce_queries(examples.attention[task], 2)  # (N, E)
    count, experts = weights.shape
    figure = new_figure(max(4.0, 1.2 + 0.35 * experts * count), 3.2)
    ax = figure.subplots()
    width = 0.8 / count
    for i in range(count):
        positions = np.arange(experts) + (i - (count - 1) / 2) * width
        ax.bar(positions, weights[i], width=width, label=_title(examples, task, i))
    names = examples.gate_labels.get(task) or [f"expert {e}" for e in range(experts)]
    ax.set_xticks(np.arange(experts), names, rotation=30 if experts > 6 else 0)
    ax.set_ylim(0, 1)
    ax.set_ylabel("gate weight")
    ax.set_title(f"{task}: gate over experts")
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(alpha=0.3, axis="y")
    return figure


def _signal(ax: Axes, signal: np.ndarray) -> None:
    """Plot one example's input (T, F) over time: lines for F <= 3, a heatmap otherwise."""
    steps, features = signal.shape
    if features <= 3:
        for f in range(features):
            ax.plot(np.arange(steps), signal[:, f], lw=1.2, label=f"feature {f}")
        if features > 1:
            ax.legend(fontsize=6, loc="upper right")
    else:
        ax.imshow(
            signal.T,
            aspect="auto",
            cmap="viridis",
            origin="lower",
            extent=(-0.5, steps - 0.5, -0.5, features - 0.5),
            interpolation="nearest",
        )
        ax.set_ylabel("feature")
    ax.set_xlim(-0.5, steps - 0.5)


def _shade(ax: Axes, weights: np.ndarray, edges: np.ndarray) -> None:
    """Shade the input's steps in red, more opaque where the attention is higher."""
    bottom, top = ax.get_ylim()
    rgba = np.zeros((1, len(weights), 4))
    rgba[..., :3] = (0.84, 0.15, 0.16)
    rgba[0, :, 3] = 0.3 * weights / max(float(weights.max()), 1e-12)
    ax.imshow(
        rgba,
        extent=(float(edges[0]), float(edges[-1]), bottom, top),
        aspect="auto",
        interpolation="nearest",
        zorder=0,
    )
    ax.set_ylim(bottom, top)


def _sequence_figure(examples: AttentionExamples, task: str) -> Figure:
    count = len(examples)
    inputs = examples.inputs if examples.inputs.ndim == 3 else examples.inputs[..., None]
    width, height = min(3.3 * count, 16), 4.2
    figure = new_figure(width, height, layout=None)  # fixed margins: drawn every epoch for TB
    figure.subplots_adjust(
        left=0.75 / width,
        right=1 - 0.15 / width,
        bottom=0.5 / height,
        top=1 - 0.65 / height,
        wspace=0.35,
        hspace=0.12,
    )
    axes = figure.subplots(2, count, squeeze=False, sharex="col", height_ratios=(1.4, 1))
    queries = 1
    for i in range(count):
        signal = inputs[i]
        weights, queries = reduce_queries(examples.attention[task][i], 1)
        steps, length = signal.shape[0], weights.shape[0]
        if examples.lengths is not None:
            real = max(1, examples.lengths[i])
            if length == steps:
                weights = weights[:real]
                length = real
            signal = signal[:real]
            steps = real
        _signal(axes[0, i], signal)
        axes[0, i].set_title(_title(examples, task, i), fontsize=9)
        span = steps / length  # input steps per attention position
        edges = np.arange(length + 1) * span - 0.5  # position j covers [edges[j], edges[j+1])
        if signal.shape[1] <= 3:
            _shade(axes[0, i], weights, edges)
        axes[1, i].stairs(weights, edges, fill=True, color="#d62728")
        axes[1, i].set_xlabel("feature" if examples.layout == "table" else "time step")
        axes[1, i].set_ylim(0, max(float(weights.max()), 1e-6) * 1.1)
        axes[1, i].grid(alpha=0.3, axis="y")
    axes[0, 0].set_ylabel("input")
    axes[1, 0].set_ylabel("attention")
    suffix = f" (mean of {queries} queries)" if queries > 1 else ""
    figure.suptitle(f"{task}: attention over time{suffix}", fontsize=11)
    return figure


def _image(inputs: np.ndarray) -> tuple[np.ndarray, str | None]:
    """An example (C, H, W) as something imshow draws: RGB for C = 3, grey otherwise."""
    low, high = float(inputs.min()), float(inputs.max())
    scaled = (inputs - low) / (high - low) if high > low else np.zeros_like(inputs)
    if scaled.shape[0] == 3:
        return np.moveaxis(scaled, 0, -1), None
    return scaled.mean(0), "gray"


def _spatial_figure(examples: AttentionExamples, task: str) -> Figure:
    count = len(examples)
    height, width = examples.inputs.shape[-2:]
    panel = min(15.0 / count, 3.5, 3.0 * width / height)  # inches per image, at most 3 high
    figure = new_figure(panel * count + 1.0, 2 * panel * height / width + 0.9)
    axes = figure.subplots(2, count, squeeze=False)
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    queries = 1
    for i in range(count):
        picture, cmap = _image(examples.inputs[i])
        amap, queries = spatial_map(examples.attention[task][i], height, width)
        amap = amap / max(float(amap.max()), 1e-12)  # each map to its own maximum
        axes[0, i].imshow(picture, cmap=cmap, extent=extent, interpolation="nearest")
        axes[0, i].set_title(_title(examples, task, i), fontsize=9)
        axes[1, i].imshow(picture, cmap=cmap, extent=extent, interpolation="nearest")
        axes[1, i].imshow(
            amap,
            cmap="inferno",
            alpha=0.6,
            extent=extent,
            interpolation="nearest",
            vmin=0.0,
            vmax=1.0,
        )
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("input")
    axes[1, 0].set_ylabel("attention")
    suffix = f" (mean of {queries} queries)" if queries > 1 else ""
    figure.suptitle(
        f"{task}: attention over the image{suffix}; brighter = more weight (each map scaled to "
        "its maximum)",
        fontsize=11,
    )
    return figure


def log_attention_images(
    writer: Any,
    model: nn.Module,
    batch: Batch,
    step: int,
    tasks: Mapping[str, Task] | None = None,
    layout: str | None = None,
    examples: int = 4,
) -> list[str]:
    """Add one image per task, ``attention/<task>``, of its attention on the batch's first
    ``examples`` samples to a TensorBoard ``SummaryWriter``; returns the tags written.

    Tasks without drawable attention (see :func:`attention_note`) are skipped. The model runs
    in eval mode and is put back as it was; nothing random is drawn.
    """
    collected = collect_attention(model, batch, tasks, layout, examples)
    tags = []
    for task in collected.attention:
        if attention_note(collected, task) is not None:
            continue
        image = figure_rgb(attention_figure(collected, task))
        tag = f"attention/{task}"
        writer.add_image(tag, image, step, dataformats="HWC")
        tags.append(tag)
    return tags


class AttentionImages:
    """A trainer callback (:class:`~attnmtl.run.trainer.Callback`): each task's attention on
    the first ``examples`` validation samples, drawn to TensorBoard every ``every`` epochs and
    at the last one, when the run writes TensorBoard logs. Drawing costs about a second."""

    def __init__(self, every: int = 5, examples: int = 2) -> None:
        self.every, self.examples = every, examples

    def __call__(self, trainer: Any, epoch: int, val: Any) -> None:
        writer, data = trainer.writer, trainer.splits.val
        last = epoch + 1 == trainer.settings.epochs
        if writer is None or len(data) == 0 or not (last or epoch % self.every == 0):
            return
        probe = data.batch(torch.arange(min(self.examples, len(data)))).to(trainer.device)
        log_attention_images(
            writer,
            trainer.model,
            probe,
            trainer.position.step,
            trainer.tasks,
            data.layout,
            self.examples,
        )
