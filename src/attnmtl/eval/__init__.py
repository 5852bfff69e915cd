"""Evaluation: per-task metrics (torchmetrics) over the labelled samples of a data set."""

from attnmtl.eval.metrics import (
    HIGHER_IS_BETTER,
    TaskEvaluator,
    evaluate,
    metric_names,
    task_metrics,
)

__all__ = ["HIGHER_IS_BETTER", "TaskEvaluator", "evaluate", "metric_names", "task_metrics"]
