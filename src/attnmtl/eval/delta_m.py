"""Multi-task gain Δm: a multi-task model's scores against single-task baselines, in percent.

Δm (Maninis, Radosavovic & Kokkinos, "Attentive Single-Tasking of Multiple Tasks", CVPR 2019),
as LibMTL computes it (``count_improvement``):

    Δm = (1/T) Σ_t Δ_t,   Δ_t = (1/M_t) Σ_m s_m (N_tm − B_tm) / |B_tm| × 100%

over T tasks and each task's M_t metrics; N is the multi-task score, B the single-task
baseline's, s_m = +1 for a higher-is-better metric and −1 for a lower-is-better one
(:data:`~attnmtl.eval.metrics.HIGHER_IS_BETTER`). Metrics are averaged within a task first, so
a task with more metrics does not weigh more. Positive = the multi-task model is better.

Which metrics (when ``metrics`` is not given): every metric the baseline reports for a task
except ``loss`` and ``r2`` — like LibMTL, which averages all of a task's evaluation metrics, but:

* ``loss`` is the training objective, not an evaluation metric (LibMTL leaves it out too).
* ``r2`` is ``1 − RMSE² / Var(y)`` on the same test targets, so it repeats RMSE (double
  counting squared error against MAE), and its relative change is unbounded near R² = 0 (a
  weak regression baseline), which would let one metric dominate Δm.

So classification tasks use ``accuracy`` and ``f1`` (and ``auroc`` for binary and multilabel
tasks), regression tasks ``mae`` and ``rmse``. The division is by ``|B|``, which is LibMTL's
``B`` for every default metric (all ≥ 0) and keeps the sign meaning "better" for a negative
baseline (an R² below 0) when one is asked for.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from attnmtl.eval.metrics import HIGHER_IS_BETTER

Scores = Mapping[str, Mapping[str, float]]  # task → metric → value
EXCLUDED = ("loss", "r2")


def default_metrics(scores: Mapping[str, float]) -> list[str]:
    """The metrics of one task's scores that Δm uses by default (see the module docstring)."""
    return [m for m in scores if m not in EXCLUDED]


def _tasks(
    multi: Scores, single: Scores, metrics: Mapping[str, Sequence[str]] | None
) -> dict[str, list[str]]:
    """task → the metrics to compare, checked against both score sets."""
    if metrics is None:
        if set(multi) != set(single):
            raise ValueError(
                f"multi-task scores for tasks {sorted(multi)} but baselines for {sorted(single)}; "
                "expected the same tasks (or give metrics={task: [metric, ...]})"
            )
        chosen = {t: default_metrics(single[t]) for t in single}
    else:
        chosen = {t: list(names) for t, names in metrics.items()}
    if not chosen:
        raise ValueError("Δm needs at least one task")
    for task, names in chosen.items():
        for side, scores in (("multi-task", multi), ("baseline", single)):
            if task not in scores:
                raise ValueError(f"task {task!r} has no {side} scores (tasks: {sorted(scores)})")
        if not names:
            raise ValueError(f"task {task!r}: no metric to compare")
        for name in names:
            if name not in HIGHER_IS_BETTER:
                raise ValueError(
                    f"task {task!r}: metric {name!r} has no known direction; expected one of: "
                    f"{', '.join(HIGHER_IS_BETTER)}"
                )
    return chosen


def _relative(task: str, metric: str, new: float, base: float) -> float:
    """s (N − B) / |B| × 100 for one metric."""
    if not (math.isfinite(new) and math.isfinite(base)):
        raise ValueError(
            f"task {task!r} metric {metric!r}: multi-task {new!r}, baseline {base!r}; "
            "expected finite values"
        )
    if base == 0:
        raise ValueError(f"task {task!r} metric {metric!r}: the baseline is 0; Δm divides by it")
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    return sign * (new - base) / abs(base) * 100.0


def per_task_delta(
    multi: Scores, single: Scores, metrics: Mapping[str, Sequence[str]] | None = None
) -> dict[str, float]:
    """task → Δ_t in percent: its metrics' signed relative changes, averaged.

    Args:
        multi: task → metric → the multi-task model's score.
        single: task → metric → the single-task baseline's score.
        metrics: task → the metrics to compare (only those tasks); default: every task, with
            the metrics of :func:`default_metrics`.
    """
    chosen = _tasks(multi, single, metrics)
    deltas = {}
    for task, names in chosen.items():
        changes = []
        for name in names:
            for side, scores in (("multi-task", multi), ("baseline", single)):
                if name not in scores[task]:
                    raise ValueError(
                        f"task {task!r}: the {side} scores have no metric {name!r} "
                        f"(they have: {', '.join(scores[task])})"
                    )
            changes.append(_relative(task, name, multi[task][name], single[task][name]))
        deltas[task] = sum(changes) / len(changes)
    return deltas


def delta_m(
    multi: Scores, single: Scores, metrics: Mapping[str, Sequence[str]] | None = None
) -> float:
    """Δm in percent: the mean over tasks of :func:`per_task_delta` (positive = MTL helped)."""
    deltas = per_task_delta(multi, single, metrics)
    return sum(deltas.values()) / len(deltas)
