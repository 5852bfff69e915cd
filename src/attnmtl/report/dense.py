"""Per-pixel predictions beside their ground truth, as figures.

Axes: N examples, C channels, H × W pixels.

Per dense task, one figure: a row per example with the input image, the ground truth and the
prediction, painted as :mod:`attnmtl.eval.dense_images` says.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from matplotlib.figure import Figure
from torch import Tensor

from attnmtl.core.tasks import Task
from attnmtl.eval.dense_images import PANELS, prediction_rows
from attnmtl.report.figures import new_figure


def predictions_figure(
    task: Task, images: Tensor, truth: Tensor, preds: Tensor, label_mask: Tensor
) -> Figure:
    """The figure of one dense task on N examples: input, ground truth, prediction."""
    n = images.shape[0]
    figure = new_figure(7.5, 2.2 * n)
    axes = figure.subplots(n, 3, squeeze=False)
    for i, row in enumerate(prediction_rows(task, images, truth, preds, label_mask)):
        panels = zip(PANELS, row, strict=True)
        for ax, (title, rgb) in zip(axes[i], panels, strict=True):
            ax.imshow(rgb, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=9)
    figure.suptitle(f"{task.name} ({task.kind})", fontsize=10)
    return figure


def dense_figures(
    model: torch.nn.Module,
    batch_inputs: Tensor,
    labels: Mapping[str, Tensor],
    label_mask: Mapping[str, Tensor],
    tasks: Mapping[str, Task],
) -> dict[str, Figure]:
    """task → its predictions figure, for every dense task (eval mode, no gradient)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        output = model(batch_inputs, None)
    model.train(was_training)
    return {
        name: predictions_figure(
            task, batch_inputs, labels[name], output.preds[name], label_mask[name]
        )
        for name, task in tasks.items()
        if task.is_dense
    }
