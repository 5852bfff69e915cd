"""Per-pixel tasks: which pixels carry ground truth, and the loss over them.

Axes: N samples (labelled for the task), C classes / channels, H × W pixels.

A dense label tensor says per pixel whether it holds ground truth, in the convention of the
NYUv2 and Cityscapes files that MTAN's and LibMTL's code read:

- ``segmentation`` (N, H, W) int64: ``ignore_index`` (-1) where unlabelled;
- ``binary_map`` (N, H, W) float 0/1: ``ignore_index`` where unlabelled;
- ``depth`` (N, 1, H, W) float: 0 or non-finite where the sensor had no return;
- ``normals`` (N, 3, H, W) float unit vectors: all-zero or non-finite where unknown.

The losses (MTAN's and LibMTL's): cross-entropy, binary cross-entropy, L1 on depth, and
``1 − cos`` between the L2-normalised prediction and the ground truth, each the mean over the
valid pixels. Invalid entries are never read (a NaN there cannot reach the loss or its
gradient).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

PRIMARY = {"segmentation": "miou", "depth": "abs_err", "normals": "mean_angle", "binary_map": "f1"}
CHANNELS = {"depth": 1, "normals": 3}


def label_shape(kind: str, batch: int, spatial: tuple[int, ...]) -> tuple[int, ...]:
    """The label shape of ``batch`` samples at resolution ``spatial`` (H, W)."""
    if kind in CHANNELS:
        return (batch, CHANNELS[kind], *spatial)
    return (batch, *spatial)


def valid_pixels(kind: str, target: Tensor, ignore_index: int = -1) -> Tensor:
    """(N, H, W) bool: the pixels of ``target`` that hold ground truth."""
    if kind == "depth":
        depth = target[:, 0]
        return torch.isfinite(depth) & (depth != 0)
    if kind == "normals":
        return torch.isfinite(target).all(1) & (target != 0).any(1)
    return target != ignore_index


def pixel_loss(kind: str, pred: Tensor, target: Tensor, ignore_index: int = -1) -> Tensor:
    """The mean loss over the valid pixels (see the module docstring); NaN if none is."""
    if kind == "segmentation":
        return F.cross_entropy(pred, target, ignore_index=ignore_index)
    valid = valid_pixels(kind, target, ignore_index)
    if kind == "binary_map":
        logits = pred[:, 0][valid]
        return F.binary_cross_entropy_with_logits(logits, target[valid].to(logits.dtype))
    if kind == "depth":
        return (pred[:, 0][valid] - target[:, 0][valid].to(pred.dtype)).abs().mean()
    unit = F.normalize(pred, dim=1)
    truth = torch.where(valid[:, None], target, 0).to(unit.dtype)
    return (1 - (unit * truth).sum(1)[valid]).mean()


def predict(kind: str, pred: Tensor) -> Tensor:
    """Label-space predictions: a class or 0/1 per pixel, depths, unit normals."""
    if kind == "segmentation":
        return pred.argmax(1)
    if kind == "binary_map":
        return (pred[:, 0] > 0).long()
    if kind == "normals":
        return F.normalize(pred, dim=1)
    return pred


def check_labels(
    name: str,
    kind: str,
    size: int,
    ignore_index: int,
    labels: Tensor,
    mask: Tensor | None,
    place: str,
) -> None:
    """ValueError naming the problem unless ``labels`` of the labelled samples are valid
    labels of the task ``name`` (shape, dtype, values; invalid pixels may hold their marker)."""
    n = labels.shape[0]
    rank = 4 if kind in CHANNELS else 3
    spatial = tuple(labels.shape[-2:])
    expected = label_shape(kind, n, spatial)
    if labels.dim() != rank or tuple(labels.shape) != expected:
        layout = "(N, H, W)" if rank == 3 else f"(N, {CHANNELS[kind]}, H, W)"
        raise ValueError(
            f"{place}task {name!r} ({kind}) labels have shape {tuple(labels.shape)}; "
            f"expected {layout}"
        )
    values = labels if mask is None else labels[mask]
    if values.numel() == 0:
        return
    if kind == "segmentation":
        if labels.is_floating_point():
            raise ValueError(
                f"{place}task {name!r} (segmentation) labels are {labels.dtype}; "
                "expected integer classes"
            )
        bad = (values != ignore_index) & ((values < 0) | (values >= size))
        if bool(bad.any()):
            found = sorted({int(v) for v in values[bad].unique()[:5]})
            raise ValueError(
                f"{place}task {name!r} (segmentation) has pixel labels {found}; expected "
                f"classes in [0, {size - 1}] or {ignore_index} (unlabelled)"
            )
    elif kind == "binary_map":
        if not bool(((values == 0) | (values == 1) | (values == ignore_index)).all()):
            raise ValueError(
                f"{place}task {name!r} (binary_map) pixel labels must be 0, 1 or "
                f"{ignore_index} (unlabelled)"
            )
    elif kind == "depth" and bool((values < 0).any()):  # NaN compares False: invalid, allowed
        raise ValueError(
            f"{place}task {name!r} (depth) has negative depths; expected >= 0 "
            "(0 or non-finite marks a pixel without ground truth)"
        )
