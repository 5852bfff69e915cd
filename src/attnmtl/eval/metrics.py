"""Per-task metrics over the labelled samples of a data set, with torchmetrics.

Axes: B batch, N labelled samples of a task, C classes / labels / outputs.

Each task kind reports (see :func:`metric_names`):

==============  ============================================  ===================
kind            metrics                                       primary
==============  ============================================  ===================
``multiclass``  ``accuracy`` (micro), ``f1`` (macro)          ``accuracy``
``binary``      ``accuracy``, ``f1`` (macro over the two       ``accuracy``
                classes), ``f1_pos`` (the positive class's),
                ``auroc``
``multilabel``  ``accuracy`` (micro), ``f1`` (macro),         ``accuracy``
                ``auroc`` (macro over labels)
``regression``  ``mae``, ``rmse``, ``r2`` (averaged over      ``mae``
                outputs)
==============  ============================================  ===================

and the per-pixel kinds theirs (:mod:`attnmtl.eval.dense_metrics`), plus ``loss`` (the task's
mean loss) for every task. :data:`HIGHER_IS_BETTER` gives each
metric's direction. Only samples labelled for a task enter its metrics. Classification models
output logits; the metrics read ``sigmoid(logit)`` for binary and multilabel tasks (AUROC in
float64, so that confident logits up to ~36 keep their order instead of all rounding to 1.0).

Undefined values are NaN, without a warning (torchmetrics would warn and return 0 or raise):

* ``auroc`` of a binary task whose labelled samples are all of one class; a multilabel task's
  macro AUROC averages the labels that have both classes, and is NaN when none has.
* ``r2`` with fewer than 2 samples, or with a constant target (SS_tot = 0) in any output.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torchmetrics
from torch import Tensor, nn
from torchmetrics.functional.classification import binary_auroc
from torchmetrics.utilities import dim_zero_cat

from attnmtl.core.losses import label_counts
from attnmtl.core.output import MultiTaskOutput
from attnmtl.core.tasks import Task
from attnmtl.data.dataset import MultiTaskDataset
from attnmtl.data.windows import to_anchor
from attnmtl.eval.dense_metrics import (
    DENSE_HIGHER_IS_BETTER,
    DENSE_METRICS,
    constant_prediction,
    dense_metric,
)

HIGHER_IS_BETTER = {
    "accuracy": True,
    "f1": True,
    "f1_pos": True,
    "auroc": True,
    "mae": False,
    "rmse": False,
    "r2": True,
    "loss": False,
    **DENSE_HIGHER_IS_BETTER,
}
NAN = float("nan")


def metric_names(task: Task) -> tuple[str, ...]:
    """The metrics reported for ``task`` (see the module docstring)."""
    if task.is_dense:
        return (*DENSE_METRICS[task.kind], "loss")
    if task.kind == "regression":
        return ("mae", "rmse", "r2", "loss")
    if task.kind == "multiclass":
        return ("accuracy", "f1", "loss")
    if task.kind == "multilabel":
        return ("accuracy", "f1", "auroc", "loss")
    return ("accuracy", "f1", "f1_pos", "auroc", "loss")


def _both_classes(target: Tensor) -> Tensor:
    """(C,) or () True where ``target`` (N,) or (N, C) holds both 0 and 1."""
    return (target.amax(0) > 0) & (target.amin(0) < 1)


class BinaryAUROC(torchmetrics.classification.BinaryAUROC):
    """Exact binary AUROC; NaN (no warning) when the samples are all of one class."""

    def compute(self) -> Tensor:  # type: ignore[override]
        target = dim_zero_cat(self.target)
        if target.numel() == 0 or not bool(_both_classes(target)):
            return torch.tensor(NAN, device=target.device)
        return super().compute()


class MultilabelAUROC(torchmetrics.classification.MultilabelAUROC):
    """Exact macro AUROC over the labels that have both classes; NaN when none has."""

    def compute(self) -> Tensor:  # type: ignore[override]
        preds, target = dim_zero_cat(self.preds), dim_zero_cat(self.target)
        scores = [
            binary_auroc(preds[:, j], target[:, j], validate_args=False)
            for j in range(target.shape[1])
            if target.numel() and bool(_both_classes(target[:, j]))
        ]
        if not scores:
            return torch.tensor(NAN, device=target.device)
        return torch.stack(scores).mean()


class R2Score(torchmetrics.R2Score):
    """R² = 1 − SS_res / SS_tot, averaged over outputs; NaN below 2 samples or at SS_tot = 0.

    (torchmetrics raises below 2 samples and returns 0 or 1 for a constant target.) Update it
    with float64 values: SS_tot comes from Σy² − (Σy)²/N, which cancels badly in float32.
    """

    def compute(self) -> Tensor:
        total = int(self.total)
        if total < 2:
            return torch.tensor(NAN, device=self.residual.device)
        # the states are Σy (sum_error), Σy² (sum_squared_error) and SS_res (residual)
        tss = self.sum_squared_error - self.sum_error**2 / total
        if bool((tss <= 1e-12 * self.sum_squared_error).any()):  # a constant target
            return torch.tensor(NAN, device=self.residual.device)
        return (1 - self.residual / tss).mean()


class MacroBinaryF1(torchmetrics.classification.MulticlassF1Score):
    """Macro F1 of a binary task: the mean of class 0's and class 1's F1, from probabilities
    of class 1 thresholded at 0.5 (torchmetrics' two-class macro F1 on the class ids)."""

    def __init__(self) -> None:
        super().__init__(num_classes=2, average="macro")

    def update(self, preds: Tensor, target: Tensor) -> None:
        super().update((preds >= 0.5).long(), target)


def task_metrics(task: Task) -> torchmetrics.MetricCollection:
    """The metric collection of one task (see the module docstring)."""
    metrics: dict[str, torchmetrics.Metric | torchmetrics.MetricCollection]
    if task.is_dense:  # one metric giving all of the kind's values (a dict)
        metrics = {"pixels": dense_metric(task.kind, task.size, task.ignore_index)}
    elif task.kind == "multiclass":
        metrics = {
            "accuracy": torchmetrics.classification.MulticlassAccuracy(task.size, average="micro"),
            "f1": torchmetrics.classification.MulticlassF1Score(task.size, average="macro"),
        }
    elif task.kind == "binary":
        metrics = {
            "accuracy": torchmetrics.classification.BinaryAccuracy(),
            # macro over both classes: predicting class 1 everywhere on a split 51% positive
            # scores 0.338, not the positive-class F1's 0.675
            "f1": MacroBinaryF1(),
            "f1_pos": torchmetrics.classification.BinaryF1Score(),
            "auroc": BinaryAUROC(),
        }
    elif task.kind == "multilabel":
        metrics = {
            "accuracy": torchmetrics.classification.MultilabelAccuracy(task.size, average="micro"),
            "f1": torchmetrics.classification.MultilabelF1Score(task.size, average="macro"),
            "auroc": MultilabelAUROC(task.size),
        }
    else:
        metrics = {
            "mae": torchmetrics.MeanAbsoluteError(),
            "rmse": torchmetrics.MeanSquaredError(squared=False),
            "r2": R2Score(),
        }
    metrics["loss"] = torchmetrics.MeanMetric()
    return torchmetrics.MetricCollection(metrics)


class TaskEvaluator(nn.Module):
    """Accumulates every task's metrics over batches; :meth:`compute` gives plain floats.

    ``target_stats`` (regression task → (mean, std) its targets were standardised by, see
    :func:`attnmtl.data.splits.target_stats`) puts MAE, RMSE and R² in natural units: the
    standardisation is internal to training. A task whose labels are relative to a per-sample
    anchor ``(c, s)`` (``anchors`` in :meth:`update`, see :mod:`attnmtl.data.windows`) is then
    scored on ``c + s · value``. The loss stays the one training minimises.
    """

    def __init__(
        self,
        tasks: Mapping[str, Task],
        target_stats: Mapping[str, tuple[Tensor, Tensor]] | None = None,
    ) -> None:
        super().__init__()
        self.tasks = dict(tasks)
        self.target_stats = dict(target_stats or {})
        self.collections = nn.ModuleDict({n: task_metrics(t) for n, t in self.tasks.items()})
        # Each process evaluates whole splits (see attnmtl.core.distributed): never sync.
        for module in self.modules():
            if isinstance(module, torchmetrics.Metric):
                module.sync_on_compute = False
                module._to_sync = False  # what compute() reads (set from sync_on_compute)

    def update(
        self,
        output: MultiTaskOutput,
        labels: Mapping[str, Tensor],
        label_mask: Mapping[str, Tensor],
        counts: list[int],
        anchors: Mapping[str, Tensor] | None = None,
    ) -> None:
        """Add one batch: the labelled rows of each task (``anchors``: task → (B, 2))."""
        for (name, task), count in zip(self.tasks.items(), counts, strict=True):
            if count == 0:
                continue
            rows = label_mask[name]
            pred, target = output.preds[name][rows].float(), labels[name][rows]
            collection = self.collections[name]
            assert isinstance(collection, torchmetrics.MetricCollection)
            loss = task.compute_loss(pred, target)
            if task.is_dense:
                if bool(torch.isfinite(loss)):  # (NaN: no valid pixel in these samples)
                    collection["loss"].update(loss, weight=count)
                collection["pixels"].update(pred, target)
                continue
            for metric_name, metric in collection.items():
                if metric_name == "loss":
                    metric.update(loss, weight=count)
                elif task.kind == "regression":
                    anchor = None if not anchors or name not in anchors else anchors[name][rows]
                    value, truth = self.natural(name, pred, target, anchor)
                    value = value.squeeze(-1) if task.size == 1 else value
                    if metric_name == "r2":
                        value = value.double()
                    metric.update(value, truth.to(value.dtype))
                elif task.kind in ("binary", "multilabel"):
                    # probabilities: torchmetrics would read logits in [0, 1] as probabilities
                    logits = pred.squeeze(-1) if task.kind == "binary" else pred
                    if metric_name == "auroc":
                        logits = logits.double()  # float32 sigmoid rounds to 1.0 from ~17
                    metric.update(logits.sigmoid(), target.long())
                else:
                    metric.update(pred, target.long())

    def natural(
        self, task: str, pred: Tensor, target: Tensor, anchor: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Predictions (N, C) and targets (N,) or (N, C) of a regression task, in natural
        units when the task's targets were standardised and/or relative to an ``anchor``
        (N, 2)."""
        stats = self.target_stats.get(task)
        shaped = target if target.dim() == 2 else target.unsqueeze(-1)  # (N, C)
        if stats is not None:
            mean, std = (s.to(pred) for s in stats)
            pred, shaped = pred * std + mean, shaped * std + mean
        if anchor is not None:
            pred, shaped = to_anchor(pred, anchor), to_anchor(shaped.to(pred), anchor)
        return pred, shaped.reshape(target.shape)

    def compute(self) -> dict[str, dict[str, float]]:
        """task → metric → value; a task with no labelled sample is left out."""
        results = {}
        for name, collection in self.collections.items():
            assert isinstance(collection, torchmetrics.MetricCollection)
            if not bool(collection["loss"].weight):
                continue
            values: dict[str, float] = {}
            for metric_name, metric in collection.items():
                value = metric.compute()
                if isinstance(value, dict):  # a dense task's metrics
                    values.update({k: float(v) for k, v in value.items()})
                else:
                    values[metric_name] = float(value)
            results[name] = values
        return results


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: MultiTaskDataset,
    tasks: Mapping[str, Task],
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    target_stats: Mapping[str, tuple[Tensor, Tensor]] | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics of ``model`` on ``data``: task → metric → value (eval mode, no gradient);
    regression in natural units given the ``target_stats`` (see :class:`TaskEvaluator`)."""
    was_training = model.training
    model.eval()
    evaluator = TaskEvaluator(tasks, target_stats).to(device)
    for batch in data.batches(batch_size):
        batch = batch.to(device)
        output = model(batch.inputs, batch.lengths)
        counts = torch.stack([batch.label_mask[name].sum() for name in tasks]).tolist()
        evaluator.update(output, batch.labels, batch.label_mask, counts, batch.anchors)
    model.train(was_training)
    return evaluator.compute()


def trivial_scores(train: MultiTaskDataset, test: MultiTaskDataset) -> dict[str, dict[str, float]]:
    """Each dense task's metrics on ``test`` of its best constant prediction from ``train``
    (:func:`constant_prediction`): the majority class, the mean depth, the best constant
    normal — what a model must beat by a wide margin."""
    tasks = {n: t for n, t in test.tasks.items() if t.is_dense}
    evaluator = TaskEvaluator(tasks)
    constants = {  # from the labelled training samples only
        n: constant_prediction(t.kind, t.size, train.labels[n][train.label_mask[n]], t.ignore_index)
        for n, t in tasks.items()
    }
    for batch in test.batches(64):
        preds = {
            name: value.float()
            .view(1, -1, 1, 1)
            .expand(len(batch), -1, *batch.labels[name].shape[-2:])
            for name, value in constants.items()
        }
        evaluator.update(
            MultiTaskOutput(preds, {}, None),
            batch.labels,
            batch.label_mask,
            label_counts(batch, tasks),
        )
    return evaluator.compute()
