"""The report of one run: ``report.html`` (self-contained) and ``plots/*.png`` in its directory.

Sections, each an HTML ``<section>`` with this id:

- ``summary``: name, selected checkpoint, epochs, steps, training speed;
- ``config``: the resolved ``config.yaml``;
- ``metrics``: per-task test and validation metrics from ``summary.json``, each metric's
  direction (↑ higher is better, ↓ lower); parameter counts and the data's description;
- ``curves``: per-task training loss and learning rate against step (``train`` events of
  ``metrics.jsonl``), per-task validation primary metric against epoch (``epoch`` events);
- ``weights``: the task weights of every logged step;
- ``attention``: every task's attention on the first test inputs, from the run's best
  checkpoint (its last when there is no best), drawn as :mod:`attnmtl.report.attention` says;
- ``efficiency``, ``generalization``: the tables of these ``summary.json`` keys, when present.

A run that is still training (no ``summary.json`` yet) or that never logged gets the sections it
has data for, with a note where data is missing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

import attnmtl.report.html as html
from attnmtl.core.io import write_text_atomic
from attnmtl.eval.metrics import HIGHER_IS_BETTER
from attnmtl.report.attention import (
    attention_figure,
    attention_note,
    collect_attention,
    fusion_figure,
)
from attnmtl.report.dense import dense_figures
from attnmtl.report.figures import (
    conflict_figure,
    figure_png,
    loss_figure,
    primary_metric,
    transfer_figure,
    validation_figure,
    weights_figure,
)
from attnmtl.run.build import LoadedRun, load_run

FUSION = "fusion over sources"  # the attention section's entry for fusion weights
SECTIONS = (
    ("summary", "Summary"),
    ("config", "Config"),
    ("metrics", "Metrics"),
    ("curves", "Training curves"),
    ("weights", "Task weights"),
    ("predictions", "Predictions"),
    ("attention", "Attention"),
    ("efficiency", "Efficiency"),
    ("generalization", "Generalization"),
)
OPTIONAL_SECTIONS = ("efficiency", "generalization")


def read_events(path: Path) -> list[dict[str, Any]]:
    """The events of a ``metrics.jsonl`` file (empty when it is absent); torn lines skipped."""
    if not path.is_file():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and "event" in event and "step" in event:
            events.append(event)
    return events


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``summary.json``, or None when it has not been written yet."""
    path = run_dir / "summary.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def metrics_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """A table of task → metric → value with each metric's direction in its header.

    The task's primary metric is shown in bold.
    """
    metrics: list[str] = []
    for values in results.values():
        metrics += [m for m in values if m not in metrics]
    header = ["task"]
    for metric in metrics:
        direction = HIGHER_IS_BETTER.get(metric)
        arrow = "" if direction is None else (" ↑" if direction else " ↓")
        header.append(html.escape(metric + arrow))
    rows = []
    for task, values in results.items():
        primary = primary_metric(values)
        cells = [html.escape(task)]
        for metric in metrics:
            text = html.escape(html.format_value(values.get(metric)))
            cells.append(f"<strong>{text}</strong>" if metric == primary else text)
        rows.append(cells)
    return html.table(header, rows, raw=True)


def _summary_section(run_dir: Path, summary: Mapping[str, Any] | None) -> str:
    if summary is None:
        return html.note("No summary.json: the run has not finished (or was interrupted).")
    keys = ("name", "selected", "epochs", "steps", "train_samples_per_s")
    labels = {"selected": "tested checkpoint", "train_samples_per_s": "training samples/s"}
    rows: list[list[Any]] = [[labels.get(k, k), summary[k]] for k in keys if k in summary]
    if isinstance(summary.get("best_epoch"), int):  # 0-based in summary.json
        rows.insert(2, ["best epoch (validation)", summary["best_epoch"] + 1])
    return html.table(["", "value"], [["run directory", str(run_dir)], *rows])


def _metrics_section(summary: Mapping[str, Any] | None) -> str:
    if summary is None:
        return html.note("No metrics yet: summary.json is written when training ends.")
    parts = [
        '<p class="note">↑: higher is better, ↓: lower is better; '
        "bold: the task's primary metric.</p>"
    ]
    for key, title in (("tasks", "Test"), ("val", "Validation")):
        if summary.get(key):
            parts.append(f"<h3>{title}</h3>" + metrics_table(summary[key]))
    if isinstance(summary.get("parameters"), Mapping):
        parts.append(html.nested_tables(summary["parameters"], "Parameters"))
    if isinstance(summary.get("data"), Mapping):
        parts.append(html.nested_tables(summary["data"], "Data"))
    return "".join(parts)


def _config_section(run_dir: Path) -> str:
    text = (run_dir / "config.yaml").read_text()
    return (
        f"<details><summary>config.yaml: the resolved config ({len(text.splitlines())} lines)"
        f"</summary><pre>{html.escape(text)}</pre></details>"
    )


def _checkpoint_folder(run_dir: Path) -> Path | None:
    for name in ("best", "last"):
        folder = run_dir / "checkpoints" / name
        if folder.is_dir():
            return folder
    return None


def loaded_run(run_dir: Path) -> tuple[LoadedRun, str]:
    """The run of its best checkpoint (its last when there is none) and that checkpoint's
    name; ValueError when it has none yet."""
    folder = _checkpoint_folder(run_dir)
    if folder is None:
        raise ValueError("the run has no checkpoint yet")
    return load_run(run_dir, folder.name), folder.name  # (the global generator is kept)


def attention_pngs(
    run_dir: Path, examples: int, loaded: tuple[LoadedRun, str] | None = None
) -> tuple[dict[str, bytes | str], str, int]:
    """task → the PNG of its attention on the first ``examples`` test inputs (or why it has
    none, as text), the checkpoint used and the number of inputs (see the module docstring);
    ``loaded``: the run as :func:`loaded_run` gives it, if already loaded."""
    run, checkpoint = loaded if loaded is not None else loaded_run(run_dir)
    splits, model = run.splits, run.model
    test = splits.test
    batch = test.batch(torch.arange(min(examples, len(test))))
    collected = collect_attention(model, batch, splits.tasks, test.layout)
    figures: dict[str, bytes | str] = {}
    for task in splits.tasks:
        reason = attention_note(collected, task)
        figures[task] = reason if reason else figure_png(attention_figure(collected, task))
    if collected.fusion is not None:  # an attention-fusion model: its weights over sources
        figures[FUSION] = figure_png(fusion_figure(collected))
    return figures, checkpoint, len(collected)


def build_report(run_dir: Path, *, examples: int = 4) -> Path:
    """Write ``run_dir/report.html`` and ``run_dir/plots/*.png``; returns the report's path.

    Args:
        run_dir: a run directory (holding ``config.yaml``).
        examples: test inputs whose attention is drawn, per task.

    Raises:
        ValueError: ``run_dir`` is not a run directory, or ``examples`` < 1 (nothing written).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ValueError(f"{run_dir}: not a run directory (no config.yaml)")
    if examples < 1:
        raise ValueError(f"examples={examples!r}; expected >= 1")
    summary = read_summary(run_dir)
    events = read_events(run_dir / "metrics.jsonl")
    train_events = [e for e in events if e["event"] == "train"]
    epoch_events = [e for e in events if e["event"] == "epoch"]
    best_epoch = None if summary is None else summary.get("best_epoch")
    plots: dict[str, bytes] = {}
    body: dict[str, str] = {
        "summary": _summary_section(run_dir, summary),
        "config": _config_section(run_dir),
        "metrics": _metrics_section(summary),
    }
    if not events:
        body["curves"] = html.note("No metrics.jsonl events: nothing was logged.")
        body["weights"] = body["curves"]
    else:
        plots["loss"] = figure_png(loss_figure(train_events))
        plots["validation"] = figure_png(
            validation_figure(epoch_events, best_epoch, HIGHER_IS_BETTER)
        )
        plots["weights"] = figure_png(weights_figure(train_events))
        if any("transfer" in e for e in train_events):
            plots["transfer"] = figure_png(transfer_figure(train_events))
        if any("conflict" in e for e in train_events):
            plots["conflict"] = figure_png(conflict_figure(train_events))
        body["curves"] = html.png_image(
            plots["loss"],
            "training loss per task and learning rate against step",
            "Left: each task's training loss on the logged batches (log scale). "
            "Right: the learning rate.",
        ) + html.png_image(
            plots["validation"],
            "validation primary metric per task against epoch",
            "Each task's primary metric on the validation split after every epoch; the dashed "
            "line marks the selected (best) epoch.",
        )
        body["weights"] = html.png_image(
            plots["weights"],
            "task weights against step",
            "The weight the weighting strategy gave each task's loss at each logged step.",
        )
        if "conflict" in plots:
            body["weights"] += html.png_image(
                plots["conflict"],
                "task gradient cosines and norms against step",
                "The per-task gradients the gradient-based strategy computed at each logged "
                "step: the cosine of every pair (below the dashed line, the two tasks conflict) "
                "and each gradient's norm, read from the strategy's Gram matrix.",
            )
        if "transfer" in plots:
            body["weights"] += html.png_image(
                plots["transfer"],
                "transfer terms against step",
                "Each weighted transfer term (teacher pairs, logit distillation, cross-task "
                "attention) on the logged batches.",
            )
    try:
        loaded: tuple[LoadedRun, str] | str = loaded_run(run_dir)
    except (ValueError, OSError) as err:
        loaded = str(err)
    predictions = _predictions_section(loaded, min(examples, 3), plots)
    if predictions:
        body["predictions"] = predictions
    body["attention"] = _attention_section(run_dir, examples, plots, loaded)
    for key in OPTIONAL_SECTIONS:
        value = None if summary is None else summary.get(key)
        if isinstance(value, Mapping):
            body[key] = html.nested_tables(value)
        elif value is not None:  # not a mapping: shown as it is
            body[key] = f"<pre>{html.escape(json.dumps(value, indent=2))}</pre>"
    sections = [(ident, title) for ident, title in SECTIONS if ident in body]
    name = (summary or {}).get("name") or run_dir.name
    document = html.page(
        f"attnmtl run report: {name}",
        str(run_dir),
        sections,
        [html.section(ident, title, body[ident]) for ident, title in sections],
    )

    plot_dir = run_dir / "plots"
    plot_dir.mkdir(exist_ok=True)
    for key, png in plots.items():
        (plot_dir / f"{key}.png").write_bytes(png)
    path = run_dir / "report.html"
    write_text_atomic(path, document)
    return path


def _predictions_section(
    loaded: tuple[LoadedRun, str] | str, examples: int, plots: dict[str, bytes]
) -> str:
    """Each dense task's predictions beside the ground truth on the first test images (added
    to ``plots``); empty for a run without dense tasks or without a checkpoint."""
    if isinstance(loaded, str):
        return ""
    run, checkpoint = loaded
    splits, test = run.splits, run.splits.test
    if not any(t.is_dense for t in splits.tasks.values()):
        return ""
    batch = test.batch(torch.arange(min(examples, len(test))))
    assert isinstance(batch.inputs, torch.Tensor)
    figures = dense_figures(run.model, batch.inputs, batch.labels, batch.label_mask, splits.tasks)
    parts = [
        html.note(
            f"The model of the {checkpoint} checkpoint on the first {len(batch)} test images: "
            "input, ground truth (black: no ground truth) and prediction."
        )
    ]
    for task, figure in figures.items():
        png = figure_png(figure)
        plots[f"predictions-{task}"] = png
        parts.append(f"<h3>{html.escape(task)}</h3>")
        parts.append(html.png_image(png, f"predictions of task {task}"))
    return "".join(parts)


def _attention_section(
    run_dir: Path,
    examples: int,
    plots: dict[str, bytes],
    loaded: tuple[LoadedRun, str] | str,
) -> str:
    """Figures of every task's attention (added to ``plots``), or why there are none."""
    if isinstance(loaded, str):
        return html.note(f"No attention figures: {loaded}")
    try:
        figures, checkpoint, count = attention_pngs(run_dir, examples, loaded)
    except (ValueError, OSError) as err:
        return html.note(f"No attention figures: {err}")
    parts = [
        html.note(
            f"The model of the {checkpoint} checkpoint on the first {count} test inputs "
            "(true label and prediction above each input)."
        )
    ]
    for task, figure in figures.items():
        parts.append(f"<h3>{html.escape(task)}</h3>")
        if task == FUSION and isinstance(figure, bytes):
            plots["fusion"] = figure
            parts.append(
                html.png_image(
                    figure,
                    "attention-fusion weights over the source models at each step",
                    "Each row is one frozen source model; the colour is its fusion weight at "
                    "that step (the weights over sources sum to 1).",
                )
            )
        elif isinstance(figure, bytes):
            plots[f"attention-{task}"] = figure
            parts.append(html.png_image(figure, f"attention of task {task}"))
        else:
            parts.append(html.note(f"No attention figure: {figure}."))
    return "".join(parts)
