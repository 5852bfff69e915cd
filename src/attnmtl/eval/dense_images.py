"""Per-pixel labels and predictions as RGB arrays, for the report's figures and TensorBoard.

Axes: N examples, C channels, H × W pixels.

A class colour map for ``segmentation`` and ``binary_map`` (ignored pixels black), a depth map
(an example's truth and prediction on one colour scale, the truth's range; invalid pixels
black) and normals as RGB, ``(n + 1) / 2`` (invalid black).
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib import colormaps
from torch import Tensor

from attnmtl.core.dense import valid_pixels
from attnmtl.core.tasks import Task

PANELS = ("input", "ground truth", "prediction")


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


def prediction_rows(
    task: Task, images: Tensor, truth: Tensor, preds: Tensor, label_mask: Tensor
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per example, the (input, ground truth, prediction) RGB arrays of one dense task (an
    example not labelled for it shows an all-black truth)."""
    hard = task.predict(preds.detach())
    rows = []
    for i in range(images.shape[0]):
        valid = valid_pixels(task.kind, truth[i : i + 1], task.ignore_index)[0]
        if not bool(label_mask[i]):
            valid = torch.zeros_like(valid)
        scale = None
        if task.kind == "depth":
            shown = truth[i, 0][valid] if bool(valid.any()) else hard[i, 0]
            scale = (float(shown.min()), float(shown.max()))
        rows.append(
            (
                to_rgb(images[i]),
                paint(task, truth[i], valid, scale),
                paint(task, hard[i], torch.ones_like(valid), scale),
            )
        )
    return rows


def prediction_grid(rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """The rows side by side, one example per row: (N·H, 3·W, 3) floats in [0, 1]."""
    return np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)


def mask_grid(masks: Tensor) -> np.ndarray:
    """Soft attention masks (N, C, H, W) in [0, 1], averaged over channels, as one viridis
    column of N images: (N·H, W, 3)."""
    mean = masks.detach().float().mean(1).clamp(0, 1).cpu().numpy()  # (N, H, W)
    return np.concatenate(list(colormaps["viridis"](mean)[..., :3]), axis=0)
