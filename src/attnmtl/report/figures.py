"""Figures of a run's history and of a benchmark, as matplotlib figures drawn with Agg.

Every function takes plain data (the events of ``metrics.jsonl``, a results dict) and returns a
:class:`matplotlib.figure.Figure` built without pyplot, so nothing touches matplotlib's global
backend or figure registry: a figure is rendered with :func:`figure_png` (bytes of a PNG) or
:func:`figure_rgb` (an (H, W, 3) uint8 array, for TensorBoard) and then simply dropped.

Axes: H height, W width (pixels).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
# One colour per task, stable across figures (matplotlib's default cycle, then tab20).
TASK_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)

Series = dict[str, tuple[list[int], list[float]]]


def new_figure(
    width: float, height: float, layout: Literal["constrained"] | None = "constrained"
) -> Figure:
    """A figure of ``width`` × ``height`` inches with an Agg canvas (no pyplot involved)."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(figure)
    return figure


def figure_png(figure: Figure) -> bytes:
    """The figure as PNG bytes (no metadata: the PNG holds pixels only)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def figure_rgb(figure: Figure) -> np.ndarray:
    """The figure rendered as an (H, W, 3) uint8 array."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def task_color(tasks: Sequence[str], task: str) -> str:
    """The colour of ``task`` among ``tasks`` (by position)."""
    return TASK_COLORS[list(tasks).index(task) % len(TASK_COLORS)]


def as_float(value: Any) -> float:
    """A logged value as a float: numbers as they are, NaN/Inf logged as strings parsed back."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def task_series(events: Sequence[Mapping[str, Any]], key: str, x: str = "step") -> Series:
    """task → (x values, values) of the per-task dict ``event[key]`` over ``events``.

    A task absent from an event (no labelled sample in that batch) has no point there.
    """
    series: Series = {}
    for event in events:
        values = event.get(key)
        if not isinstance(values, Mapping):
            continue
        for task, value in values.items():
            xs, ys = series.setdefault(str(task), ([], []))
            xs.append(int(event[x]))
            ys.append(as_float(value))
    return series


def primary_metric(metrics: Mapping[str, Any]) -> str:
    """The primary metric among a task's reported metrics (:attr:`Task.primary_metric`'s rule).

    ``accuracy`` for classification tasks, ``mae`` for regression; otherwise the first metric
    other than ``loss``, and ``loss`` when it is the only one.
    """
    for name in ("accuracy", "mae"):
        if name in metrics:
            return name
    others = [name for name in metrics if name != "loss"]
    return others[0] if others else "loss"


def _no_data(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#666")
    ax.set_xticks([])
    ax.set_yticks([])


def loss_figure(train_events: Sequence[Mapping[str, Any]]) -> Figure:
    """Per-task training loss against step (log scale), and the learning rate against step."""
    figure = new_figure(11, 3.6)
    ax_loss, ax_lr = figure.subplots(1, 2, width_ratios=(2.2, 1))
    losses = task_series(train_events, "loss")
    tasks = list(losses)
    for task, (steps, values) in losses.items():
        ax_loss.plot(steps, values, label=task, color=task_color(tasks, task), lw=1.4)
    if losses:
        positive = [v for _, ys in losses.values() for v in ys if v > 0 and math.isfinite(v)]
        if positive:
            ax_loss.set_yscale("log")
        ax_loss.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
        ax_loss.set_xlabel("step")
        ax_loss.set_ylabel("training loss (batch)")
        ax_loss.grid(alpha=0.3, which="both")
    else:
        _no_data(ax_loss, "no training steps logged")
    ax_loss.set_title("training loss per task")
    lr = [(int(e["step"]), as_float(e["lr"])) for e in train_events if "lr" in e]
    if lr:
        ax_lr.plot([s for s, _ in lr], [v for _, v in lr], color="#444", lw=1.4)
        ax_lr.set_xlabel("step")
        ax_lr.set_ylabel("learning rate")
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        ax_lr.grid(alpha=0.3)
    else:
        _no_data(ax_lr, "no learning rate logged")
    ax_lr.set_title("learning rate")
    return figure


def validation_figure(
    epoch_events: Sequence[Mapping[str, Any]],
    best_epoch: int | None = None,
    higher_is_better: Mapping[str, bool] | None = None,
) -> Figure:
    """Per task, its validation primary metric against epoch (one panel per task).

    Epochs are counted from 1 (``epoch`` events hold the 0-based index). ``best_epoch`` (0-based,
    as ``summary.json`` holds it) is marked with a dashed line: the selected model.
    """
    val: dict[str, tuple[str, list[int], list[float]]] = {}
    for event in epoch_events:
        for task, metrics in (event.get("val") or {}).items():
            metric = primary_metric(metrics)
            name, xs, ys = val.setdefault(str(task), (metric, [], []))
            xs.append(int(event["epoch"]) + 1)
            ys.append(as_float(metrics.get(name)))
    tasks = list(val)
    count = max(1, len(tasks))
    figure = new_figure(min(3.6 * count, 14), 3.2)
    axes = np.atleast_1d(figure.subplots(1, count, squeeze=False)[0])
    if not tasks:
        _no_data(axes[0], "no validation epochs logged")
        return figure
    directions = higher_is_better or {}
    for ax, task in zip(axes, tasks, strict=True):
        metric, epochs, values = val[task]
        ax.plot(epochs, values, marker="o", ms=3, color=task_color(tasks, task), lw=1.4)
        if best_epoch is not None:
            ax.axvline(best_epoch + 1, color="#888", ls="--", lw=1, label="selected")
            ax.legend(loc="best", fontsize=8)
        direction = directions.get(metric)
        arrow = "" if direction is None else (" (↑ better)" if direction else " (↓ better)")
        ax.set_title(f"{task}: validation {metric}")
        ax.set_ylabel(f"{metric}{arrow}")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    return figure


def series_figure(
    train_events: Sequence[Mapping[str, Any]], key: str, ylabel: str, title: str
) -> Figure:
    """One line per name of the per-step mapping ``key`` of the train events."""
    figure = new_figure(11, 3.4)
    ax = figure.subplots()
    series = task_series(train_events, key)
    names = list(series)
    for name, (steps, values) in series.items():
        ax.plot(steps, values, label=name, color=task_color(names, name), lw=1.4)
    if series:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    else:
        _no_data(ax, f"no {title} logged")
    ax.set_title(title)
    return figure


def weights_figure(train_events: Sequence[Mapping[str, Any]]) -> Figure:
    """The task weights the weighting strategy used at each logged step."""
    return series_figure(train_events, "weights", "task weight", "task weights")


def conflict_figure(train_events: Sequence[Mapping[str, Any]]) -> Figure:
    """The task gradients at each logged step, as gradient-based strategies computed them:
    pairwise cosines (left; below 0, the pair conflicts) and norms (right, log scale)."""
    events = [
        {"step": e["step"], **e["conflict"]}
        for e in train_events
        if isinstance(e.get("conflict"), Mapping)
    ]
    figure = new_figure(11, 3.4)
    axes = figure.subplots(1, 2)
    for ax, key, label in ((axes[0], "cos", "cosine"), (axes[1], "norm", "gradient norm")):
        series = task_series(events, key)
        names = list(series)
        for name, (steps, values) in series.items():
            ax.plot(steps, values, label=name, color=task_color(names, name), lw=1.2)
        if series:
            ax.set_xlabel("step")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            if key == "cos":
                ax.axhline(0.0, color="0.4", lw=0.8, ls="--")
            elif all(v > 0 for _, values in series.values() for v in values):
                ax.set_yscale("log")
        else:
            _no_data(ax, f"no gradient {label}s logged")
    axes[0].set_title("task gradients: pairwise cosine")
    axes[1].set_title("task gradients: norm")
    return figure


def transfer_figure(train_events: Sequence[Mapping[str, Any]]) -> Figure:
    """Each weighted transfer term (teacher pairs, logits, cross-task) at each logged step."""
    return series_figure(train_events, "transfer", "weighted term", "transfer terms")


def pareto_front(points: Sequence[tuple[float, float]], higher: tuple[bool, bool]) -> list[bool]:
    """Which points no other point dominates (as good on both scores, better on one).

    ``higher`` gives each score's direction (True: higher is better).
    """
    signs = [1.0 if h else -1.0 for h in higher]
    keys = [(signs[0] * x, signs[1] * y) for x, y in points]
    front = []
    for i, (a, b) in enumerate(keys):
        dominated = any(
            c >= a and d >= b and (c > a or d > b) for j, (c, d) in enumerate(keys) if j != i
        )
        front.append(not dominated)
    return front


def pareto_figure(results: Mapping[str, Any], task_x: str, task_y: str) -> Figure:
    """Each weighting's mean scores on two tasks (± std), the Pareto front, the single-task pair.

    Axes are oriented so that up and right are better (a lower-is-better metric's axis is
    inverted). ``results`` has the shape :func:`attnmtl.report.build_bench_report` documents.
    """
    tasks = results["tasks"]
    figure = new_figure(5.6, 4.6)
    ax = figure.subplots()
    names, points, errors = [], [], []
    for weighting, entry in results["multi"].items():
        x, y = entry["tasks"][task_x], entry["tasks"][task_y]
        names.append(str(weighting))
        points.append((as_float(x["mean"]), as_float(y["mean"])))
        errors.append((_std(x), _std(y)))
    higher = (bool(tasks[task_x]["higher_is_better"]), bool(tasks[task_y]["higher_is_better"]))
    front = pareto_front(points, higher)
    for (x, y), (ex, ey), on_front, name in zip(points, errors, front, names, strict=True):
        ax.errorbar(
            x,
            y,
            xerr=ex,
            yerr=ey,
            fmt="o",
            ms=7 if on_front else 5,
            color="#d62728" if on_front else "#1f77b4",
            mfc="#d62728" if on_front else "white",
            capsize=2,
            lw=1,
        )
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ordered = sorted(
        (p for p, f in zip(points, front, strict=True) if f),
        key=lambda p: p[0] * (1 if higher[0] else -1),
    )
    if len(ordered) > 1:
        ax.plot(*zip(*ordered, strict=True), color="#d62728", lw=1, ls=":", label="Pareto front")
    single = results.get("single", {})
    if task_x in single and task_y in single:
        sx, sy = as_float(single[task_x]["mean"]), as_float(single[task_y]["mean"])
        ax.plot([sx], [sy], marker="*", ms=12, color="#2ca02c", ls="none", label="single-task")
        ax.axvline(sx, color="#2ca02c", lw=0.8, ls="--")
        ax.axhline(sy, color="#2ca02c", lw=0.8, ls="--")
    if not higher[0]:
        ax.invert_xaxis()
    if not higher[1]:
        ax.invert_yaxis()
    ax.plot([], [], "o", color="#d62728", label="multi-task, on the front")
    ax.plot([], [], "o", color="#1f77b4", mfc="white", label="multi-task, dominated")
    ax.legend(loc="best", fontsize=8)
    ax.set_xlabel(_axis_label(task_x, tasks[task_x]))
    ax.set_ylabel(_axis_label(task_y, tasks[task_y]))
    ax.set_title(f"{task_x} vs {task_y} (up and right are better)")
    ax.grid(alpha=0.3)
    return figure


def _std(entry: Mapping[str, Any]) -> float:
    std = as_float(entry.get("std", 0.0))
    return std if math.isfinite(std) else 0.0


def _axis_label(task: str, info: Mapping[str, Any]) -> str:
    direction = "higher" if info["higher_is_better"] else "lower"
    return f"{task} {info['metric']} ({direction} is better)"
