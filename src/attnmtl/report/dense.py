"""Per-pixel predictions beside their ground truth, as images.

Axes: N examples, C channels, H × W pixels.

Per dense task, one figure: a row per example with the input image, the ground truth and the
prediction — a class colour map for ``segmentation`` and ``binary_map`` (ignored pixels
black), a depth map (the row's truth and prediction on one colour scale; invalid pixels black)
and normals as RGB, ``(n + 1) / 2`` (invalid black).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from torch import Tensor

from attnmtl.core.dense import valid_pixels
from attnmtl.core.tasks import Task
from attnmtl.report.figures import new_figure


def to_rgb(image: Tensor) -> np.ndarray:
    """(C, H, W) → (H, W, 3) floats in [0, 1] (a grey image repeated; others min-max scaled
    when they leave [0, 1])."""
    x = image.detach().float().cpu()
    if x.shape[0] == 1:
        x = x.repeat(3, 1, 1)
    x = x[:3]
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > 1:
        x = (x - low) / max(high - low, 1e-12)
    return x.permute(1, 2, 0).numpy()


def paint(
    task: Task, value: Tensor, valid: Tensor, scale: tuple[float, float] | None
) -> np.ndarray:
    """One map of ``task`` in label space ((H, W) classes, (1, H, W) depth or (3, H, W)
    normals) as (H, W, 3) RGB, black where not ``valid``."""
    mask = valid.cpu().numpy()
    if task.kind in ("segmentation", "binary_map"):
        colours = colormaps["tab20"](np.arange(max(task.size, 2)) % 20)[:, :3]
        classes = value.long().clamp(0, max(task.size, 2) - 1).cpu().numpy()
        rgb = colours[classes]
    elif task.kind == "depth":
        depth = value[0].detach().float().cpu().numpy()
        low, high = scale if scale is not None else (float(depth.min()), float(depth.max()))
        rgb = colormaps["viridis"](np.clip((depth - low) / max(high - low, 1e-12), 0, 1))[..., :3]
    else:
        rgb = ((value.detach().float().cpu().permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1)
    return np.where(mask[..., None], rgb, 0.0)


def predictions_figure(
    task: Task, images: Tensor, truth: Tensor, preds: Tensor, label_mask: Tensor
) -> Figure:
    """The figure of one dense task on N examples: input, ground truth, prediction."""
    n = images.shape[0]
    figure = new_figure(7.5, 2.2 * n)
    axes = figure.subplots(n, 3, squeeze=False)
    hard = task.predict(preds.detach())
    for i in range(n):
        valid = valid_pixels(task.kind, truth[i : i + 1], task.ignore_index)[0]
        if not bool(label_mask[i]):
            valid = torch.zeros_like(valid)
        scale = None
        if task.kind == "depth":
            shown = truth[i, 0][valid] if bool(valid.any()) else hard[i, 0]
            scale = (float(shown.min()), float(shown.max()))
        everywhere = torch.ones_like(valid)
        panels = [
            ("input", to_rgb(images[i])),
            ("ground truth", paint(task, truth[i], valid, scale)),
            ("prediction", paint(task, hard[i], everywhere, scale)),
        ]
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
