"""The report of ``attnmtl bench mtl``: a results table and Pareto plots, in one HTML file.

The results dict (what the benchmark produces; JSON-serialisable)::

    {
      "tasks":  {TASK: {"metric": "accuracy", "higher_is_better": true}, ...},
      "single": {TASK: {"mean": 0.97, "std": 0.004}, ...},
      "multi":  {WEIGHTING: {"tasks":   {TASK: {"mean": 0.96, "std": 0.006}, ...},
                             "delta_m": {"mean": -0.8, "std": 0.3}}, ...},
      ...
    }

``tasks`` gives each task's primary metric and its direction, in the order of the table's
columns; ``single`` each task's single-task baseline (mean and std over seeds of that metric on
the test split); ``multi`` each weighting's multi-task scores on every task and its Δm in percent
(Maninis et al., CVPR 2019; positive: the multi-task model beats the baselines). Other top-level
keys (seeds, config name, budget...) are shown as a setup table. A ``std`` may be NaN or absent
(one seed): the mean is shown alone.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attnmtl.report.html as html
from attnmtl.core.io import write_text_atomic
from attnmtl.report.figures import as_float, figure_png, pareto_figure

RESULT_KEYS = ("tasks", "single", "multi")


def check_bench_results(results: Mapping[str, Any]) -> list[str]:
    """Raise ValueError unless ``results`` has the documented shape; returns the task names."""
    for key in RESULT_KEYS:
        if not isinstance(results.get(key), Mapping):
            raise ValueError(f"bench results: {key!r} is missing or not a mapping")
    tasks = list(results["tasks"])
    if not tasks:
        raise ValueError("bench results: 'tasks' is empty")
    for task, info in results["tasks"].items():
        if not isinstance(info, Mapping) or not {"metric", "higher_is_better"} <= set(info):
            raise ValueError(
                f"bench results: tasks.{task} must hold 'metric' and 'higher_is_better'"
            )
    for task in tasks:
        _check_score(results["single"].get(task), f"single.{task}")
    for weighting, entry in results["multi"].items():
        if not isinstance(entry, Mapping) or not isinstance(entry.get("tasks"), Mapping):
            raise ValueError(f"bench results: multi.{weighting} must hold 'tasks' and 'delta_m'")
        for task in tasks:
            _check_score(entry["tasks"].get(task), f"multi.{weighting}.tasks.{task}")
        _check_score(entry.get("delta_m"), f"multi.{weighting}.delta_m")
    return tasks


def _check_score(value: Any, where: str) -> None:
    if not isinstance(value, Mapping) or "mean" not in value:
        raise ValueError(f"bench results: {where} must be {{'mean': x, 'std': s}}")


def mean_std(entry: Mapping[str, Any], digits: int = 4) -> str:
    """``mean ± std`` (the mean alone when the std is absent or not finite)."""
    mean, std = as_float(entry["mean"]), as_float(entry.get("std", math.nan))
    text = f"{mean:.{digits}f}"
    if math.isfinite(std):
        text += f" ± {std:.{digits}f}"
    return text


def best_rows(values: Sequence[float], higher: bool) -> set[int]:
    """Indices of the best value(s) in ``values`` by direction (NaN never best)."""
    finite = [(v if higher else -v, i) for i, v in enumerate(values) if math.isfinite(v)]
    if not finite:
        return set()
    top = max(v for v, _ in finite)
    return {i for v, i in finite if v == top}


def results_table(results: Mapping[str, Any], tasks: Sequence[str]) -> str:
    """Rows: the single-task baselines, then each weighting; columns: tasks and Δm.

    The best score of each column is in bold (by the metric's direction; Δm: the highest).
    """
    infos = results["tasks"]
    header = ["model"]
    for task in tasks:
        arrow = "↑" if infos[task]["higher_is_better"] else "↓"
        header.append(html.escape(f"{task} {infos[task]['metric']} {arrow}"))
    header.append("Δm (%) ↑")
    rows: list[tuple[str, list[Mapping[str, Any]], Mapping[str, Any] | None]] = [
        ("single-task baselines", [results["single"][t] for t in tasks], None)
    ]
    for weighting, entry in results["multi"].items():
        rows.append((f"multi-task: {weighting}", [entry["tasks"][t] for t in tasks], entry))
    bold: list[set[int]] = [
        best_rows(
            [as_float(scores[col]["mean"]) for _, scores, _ in rows],
            bool(infos[task]["higher_is_better"]),
        )
        for col, task in enumerate(tasks)
    ]
    delta_best = best_rows(
        [as_float(e["delta_m"]["mean"]) if e else math.nan for _, _, e in rows], True
    )
    cells = []
    for index, (name, scores, entry) in enumerate(rows):
        row = [html.escape(name)]
        for col, score in enumerate(scores):
            text = html.escape(mean_std(score))
            row.append(f"<strong>{text}</strong>" if index in bold[col] else text)
        if entry is None:
            row.append("0 (reference)")
        else:
            text = html.escape(mean_std(entry["delta_m"], digits=2))
            row.append(f"<strong>{text}</strong>" if index in delta_best else text)
        cells.append(row)
    return html.table(header, cells, raw=True)


def pareto_pairs(tasks: Sequence[str], chosen: tuple[str, str] | None) -> list[tuple[str, str]]:
    """The task pairs to plot: ``chosen``, else every pair of up to 3 tasks, else the first two."""
    if chosen is not None:
        unknown = [t for t in chosen if t not in tasks]
        if unknown or len(set(chosen)) != 2:
            raise ValueError(
                f"pareto tasks {list(chosen)}; expected two different tasks of {list(tasks)}"
            )
        return [chosen]
    if len(tasks) < 2:
        return []
    if len(tasks) <= 3:
        return list(itertools.combinations(tasks, 2))
    return [(tasks[0], tasks[1])]


def build_bench_report(
    results: Mapping[str, Any],
    out_dir: Path,
    *,
    pareto_tasks: tuple[str, str] | None = None,
) -> Path:
    """Write ``out_dir/report.html`` and ``out_dir/plots/pareto-A-B.png``; returns the page.

    Args:
        results: the benchmark's results (shape in the module docstring).
        out_dir: where to write (created if missing).
        pareto_tasks: the two tasks of the Pareto plot; default every pair of up to three
            tasks, else the first two.
    """
    tasks = check_bench_results(results)
    pairs = pareto_pairs(tasks, pareto_tasks) if results["multi"] else []
    plots = {f"pareto-{a}-{b}": figure_png(pareto_figure(results, a, b)) for a, b in pairs}
    body = {
        "results": html.note(
            "Test scores, mean ± std over seeds; bold: the best of each column. Δm: the mean "
            "relative gain over the single-task baselines, metric directions applied "
            "(Maninis et al., CVPR 2019); positive means the multi-task model helped."
        )
        + results_table(results, tasks)
    }
    if plots:
        body["pareto"] = "".join(
            html.png_image(
                png,
                f"Pareto plot of {a} and {b}",
                f"Each weighting's mean {a} and {b} scores (bars: ± std). Red: not dominated "
                "by another weighting on both tasks. Green star and lines: the single-task "
                "baselines (two separate models).",
            )
            for (a, b), png in zip(pairs, plots.values(), strict=True)
        )
    extra = {k: v for k, v in results.items() if k not in RESULT_KEYS}
    if extra:
        body["setup"] = html.nested_tables(extra)
    titles = {"results": "Results", "pareto": "Pareto plots", "setup": "Setup"}
    sections = [(ident, titles[ident]) for ident in body]
    document = html.page(
        "attnmtl bench mtl",
        f"{len(tasks)} tasks, {len(results['multi'])} weightings",
        sections,
        [html.section(ident, title, body[ident]) for ident, title in sections],
    )

    out_dir = Path(out_dir)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    for key, png in plots.items():
        (out_dir / "plots" / f"{key}.png").write_bytes(png)
    path = out_dir / "report.html"
    write_text_atomic(path, document)
    return path
