"""Per-task metrics over the labelled samples of a data set, with torchmetrics.

Axes: B batch, C classes / outputs.

Every task reports ``loss`` (its mean loss, lower is better) and its primary metric —
``accuracy`` for classification tasks, ``mae`` for regression — plus macro-F1 for classification
and RMSE for regression. Only samples labelled for a task enter its metrics.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torchmetrics
from torch import Tensor, nn

from attnmtl.data.dataset import MultiTaskDataset
from attnmtl.models.output import MultiTaskOutput
from attnmtl.tasks import Task

HIGHER_IS_BETTER = {"accuracy": True, "f1": True, "mae": False, "rmse": False, "loss": False}


def metric_names(task: Task) -> tuple[str, ...]:
    """The metrics reported for ``task``."""
    if task.kind == "regression":
        return ("mae", "rmse", "loss")
    return ("accuracy", "f1", "loss")


def task_metrics(task: Task) -> torchmetrics.MetricCollection:
    """The metric collection of one task (see the module docstring)."""
    metrics: dict[str, torchmetrics.Metric | torchmetrics.MetricCollection]
    if task.kind == "multiclass":
        metrics = {
            "accuracy": torchmetrics.classification.MulticlassAccuracy(task.size, average="micro"),
            "f1": torchmetrics.classification.MulticlassF1Score(task.size, average="macro"),
        }
    elif task.kind == "binary":
        metrics = {
            "accuracy": torchmetrics.classification.BinaryAccuracy(),
            "f1": torchmetrics.classification.BinaryF1Score(),
        }
    elif task.kind == "multilabel":
        metrics = {
            "accuracy": torchmetrics.classification.MultilabelAccuracy(task.size, average="micro"),
            "f1": torchmetrics.classification.MultilabelF1Score(task.size, average="macro"),
        }
    else:
        metrics = {
            "mae": torchmetrics.MeanAbsoluteError(),
            "rmse": torchmetrics.MeanSquaredError(squared=False),
        }
    metrics["loss"] = torchmetrics.MeanMetric()
    return torchmetrics.MetricCollection(metrics)


class TaskEvaluator(nn.Module):
    """Accumulates every task's metrics over batches; :meth:`compute` gives plain floats."""

    def __init__(self, tasks: Mapping[str, Task]) -> None:
        super().__init__()
        self.tasks = dict(tasks)
        self.collections = nn.ModuleDict({n: task_metrics(t) for n, t in self.tasks.items()})

    def update(
        self,
        output: MultiTaskOutput,
        labels: Mapping[str, Tensor],
        label_mask: Mapping[str, Tensor],
        counts: list[int],
    ) -> None:
        """Add one batch: the labelled rows of each task."""
        for (name, task), count in zip(self.tasks.items(), counts, strict=True):
            if count == 0:
                continue
            rows = label_mask[name]
            pred, target = output.preds[name][rows].float(), labels[name][rows]
            collection = self.collections[name]
            assert isinstance(collection, torchmetrics.MetricCollection)
            loss = task.compute_loss(pred, target)
            for metric_name, metric in collection.items():
                if metric_name == "loss":
                    metric.update(loss, weight=count)
                elif task.kind == "regression":
                    value = pred.squeeze(-1) if task.size == 1 else pred
                    metric.update(value, target.to(value.dtype))
                elif task.kind == "binary":  # probabilities: torchmetrics would read logits
                    metric.update(pred.squeeze(-1).sigmoid(), target.long())  # in [0, 1] as such
                elif task.kind == "multilabel":
                    metric.update(pred.sigmoid(), target.long())
                else:
                    metric.update(pred, target.long())

    def compute(self) -> dict[str, dict[str, float]]:
        """task → metric → value; a task with no labelled sample is left out."""
        results = {}
        for name, collection in self.collections.items():
            assert isinstance(collection, torchmetrics.MetricCollection)
            if not bool(collection["loss"].weight):
                continue
            results[name] = {k: float(v) for k, v in collection.compute().items()}
        return results


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: MultiTaskDataset,
    tasks: Mapping[str, Task],
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
) -> dict[str, dict[str, float]]:
    """Metrics of ``model`` on ``data``: task → metric → value (eval mode, no gradient)."""
    was_training = model.training
    model.eval()
    evaluator = TaskEvaluator(tasks).to(device)
    for batch in data.batches(batch_size):
        batch = batch.to(device)
        output = model(batch.inputs, batch.lengths)
        counts = torch.stack([batch.label_mask[name].sum() for name in tasks]).tolist()
        evaluator.update(output, batch.labels, batch.label_mask, counts)
    model.train(was_training)
    return evaluator.compute()
