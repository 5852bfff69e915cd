"""Per-pixel metrics, accumulated over every valid pixel of a whole split.

Axes: N samples, C classes, H × W pixels, P valid pixels.

==================  =====================================================  ==============
kind                metrics                                                primary
==================  =====================================================  ==============
``segmentation``    ``miou`` (mean over classes of the split's IoU; a      ``miou``
                    class absent from both prediction and truth is left
                    out), ``pixel_acc``
``depth``           ``abs_err`` mean |d̂ − d|, ``rel_err`` mean |d̂ − d|/d,  ``abs_err``
                    ``delta1`` share with max(d̂/d, d/d̂) < 1.25
``normals``         ``mean_angle``, ``median_angle`` (degrees),            ``mean_angle``
                    ``within_11_25``, ``within_22_5``, ``within_30``
                    (shares of pixels within that angle)
``binary_map``      ``accuracy``, ``f1`` (the positive class's), pixels    ``f1``
==================  =====================================================  ==============

Every mean is over all valid pixels of the split together (Σ error / Σ pixels), so it does not
depend on the batch size. LibMTL's NYUv2 code (``examples/nyu/utils.py`` of
median-research-group/LibMTL, the source of the tables its users compare with) instead averages
depth and normal errors per batch or per image and then over those, and takes the median of
each and averages the medians; on equal-sized images the means agree with ours up to how valid
pixels spread over images, the median does not exactly. Its mIoU is ours (one confusion matrix
over the split, IoU per class, their mean; it takes the plain mean, NaN when a class is absent
from both, where we leave such a class out, as torchmetrics' ``JaccardIndex`` does).
The median angle comes from a histogram of 0.001° bins (exact to 0.0005°), not from holding
every pixel's angle.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor

from attnmtl.core.dense import valid_pixels

DENSE_METRICS = {
    "segmentation": ("miou", "pixel_acc"),
    "depth": ("abs_err", "rel_err", "delta1"),
    "normals": ("mean_angle", "median_angle", "within_11_25", "within_22_5", "within_30"),
    "binary_map": ("accuracy", "f1"),
}
DENSE_HIGHER_IS_BETTER = {
    "miou": True,
    "pixel_acc": True,
    "abs_err": False,
    "rel_err": False,
    "delta1": True,
    "mean_angle": False,
    "median_angle": False,
    "within_11_25": True,
    "within_22_5": True,
    "within_30": True,
}
ANGLE_BINS = 180_000  # 0.001° each
THRESHOLDS = {"within_11_25": 11.25, "within_22_5": 22.5, "within_30": 30.0}


class DepthErrors(torchmetrics.Metric):
    """``abs_err``, ``rel_err`` and ``delta1`` over the valid pixels (depth > 0, finite).

    ``update(pred, target)``: (N, 1, H, W) each; ``compute()`` a dict of the three (NaN with no
    valid pixel). A non-positive prediction counts as failing δ < 1.25.
    """

    full_state_update = False
    total_abs: Tensor
    total_rel: Tensor
    total_delta: Tensor
    pixels: Tensor

    def __init__(self) -> None:
        super().__init__()
        for name in ("total_abs", "total_rel", "total_delta", "pixels"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        valid = valid_pixels("depth", target)
        d_hat, d = pred[:, 0][valid].double(), target[:, 0][valid].double()
        error = (d_hat - d).abs()
        self.total_abs += error.sum()
        self.total_rel += (error / d).sum()
        ratio = torch.maximum(d_hat / d, d / d_hat)
        self.total_delta += ((d_hat > 0) & (ratio < 1.25)).sum()
        self.pixels += valid.sum()

    def compute(self) -> dict[str, Tensor]:
        n = self.pixels
        if float(n) == 0:
            nan = torch.tensor(math.nan, dtype=torch.float64)
            return {"abs_err": nan, "rel_err": nan, "delta1": nan}
        return {
            "abs_err": self.total_abs / n,
            "rel_err": self.total_rel / n,
            "delta1": self.total_delta / n,
        }


class NormalErrors(torchmetrics.Metric):
    """Angular errors (degrees) between L2-normalised predictions and the ground truth over the
    valid pixels: mean, median (from a 0.001° histogram: exact to 0.0005°)
    and the shares within 11.25°, 22.5° and 30°.

    ``update(pred, target)``: (N, 3, H, W) each; ``compute()`` a dict (NaN with no valid pixel).
    """

    full_state_update = False
    total_angle: Tensor
    pixels: Tensor
    histogram: Tensor
    within: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total_angle", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("pixels", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state(
            "histogram", torch.zeros(ANGLE_BINS, dtype=torch.int64), dist_reduce_fx="sum"
        )
        self.add_state(
            "within", torch.zeros(len(THRESHOLDS), dtype=torch.float64), dist_reduce_fx="sum"
        )

    def update(self, pred: Tensor, target: Tensor) -> None:
        valid = valid_pixels("normals", target)
        unit = F.normalize(pred.double(), dim=1).permute(0, 2, 3, 1)[valid]  # (P, 3)
        truth = F.normalize(target.double(), dim=1).permute(0, 2, 3, 1)[valid]
        angle = torch.rad2deg(torch.acos((unit * truth).sum(1).clamp(-1, 1)))  # (P,)
        self.total_angle += angle.sum()
        self.pixels += angle.numel()
        bins = (angle * (ANGLE_BINS / 180.0)).long().clamp(0, ANGLE_BINS - 1)
        self.histogram += torch.bincount(bins, minlength=ANGLE_BINS)
        limits = torch.tensor(list(THRESHOLDS.values()), dtype=angle.dtype, device=angle.device)
        self.within += (angle[:, None] < limits).sum(0)

    def median(self) -> Tensor:
        """The median angle from the histogram: the mean of the two middle angles (one when
        the count is odd), as ``numpy.median``, each read as its bin's centre."""
        cumulative = self.histogram.cumsum(0)
        total = int(cumulative[-1])
        ranks = torch.tensor([(total + 1) // 2, total // 2 + 1], device=cumulative.device)
        bins = torch.searchsorted(cumulative, ranks)  # first bin holding that many angles
        return ((bins.double() + 0.5) * (180.0 / ANGLE_BINS)).mean()

    def compute(self) -> dict[str, Tensor]:
        if float(self.pixels) == 0:
            nan = torch.tensor(math.nan, dtype=torch.float64)
            return {name: nan for name in DENSE_METRICS["normals"]}
        out = {"mean_angle": self.total_angle / self.pixels, "median_angle": self.median()}
        for i, name in enumerate(THRESHOLDS):
            out[name] = self.within[i] / self.pixels
        return out


class Segmentation(torchmetrics.Metric):
    """``miou`` and ``pixel_acc`` from one confusion matrix over the split (torchmetrics'
    multiclass Jaccard index and accuracy, ``ignore_index`` pixels left out)."""

    full_state_update = False

    def __init__(self, classes: int, ignore_index: int = -1) -> None:
        super().__init__()
        self.iou = torchmetrics.classification.MulticlassJaccardIndex(
            classes, average="macro", ignore_index=ignore_index
        )
        self.acc = torchmetrics.classification.MulticlassAccuracy(
            classes, average="micro", ignore_index=ignore_index
        )

    def update(self, pred: Tensor, target: Tensor) -> None:
        hard = pred.argmax(1)
        self.iou.update(hard, target)
        self.acc.update(hard, target)

    def compute(self) -> dict[str, Tensor]:
        return {"miou": self.iou.compute(), "pixel_acc": self.acc.compute()}

    def reset(self) -> None:
        super().reset()
        self.iou.reset()
        self.acc.reset()


class BinaryMap(torchmetrics.Metric):
    """Pixel ``accuracy`` and the positive class's ``f1`` of a per-pixel binary task, from
    logits thresholded at 0 (probability 0.5), ``ignore_index`` pixels left out."""

    full_state_update = False

    def __init__(self, ignore_index: int = -1) -> None:
        super().__init__()
        self.acc = torchmetrics.classification.BinaryAccuracy(ignore_index=ignore_index)
        self.f1 = torchmetrics.classification.BinaryF1Score(ignore_index=ignore_index)

    def update(self, pred: Tensor, target: Tensor) -> None:
        probs = pred[:, 0].float().sigmoid()
        self.acc.update(probs, target.long())
        self.f1.update(probs, target.long())

    def compute(self) -> dict[str, Tensor]:
        return {"accuracy": self.acc.compute(), "f1": self.f1.compute()}

    def reset(self) -> None:
        super().reset()
        self.acc.reset()
        self.f1.reset()


def dense_metric(kind: str, classes: int, ignore_index: int = -1) -> torchmetrics.Metric:
    """The metric of a dense task kind (see the module table)."""
    if kind == "segmentation":
        return Segmentation(classes, ignore_index)
    if kind == "depth":
        return DepthErrors()
    if kind == "normals":
        return NormalErrors()
    return BinaryMap(ignore_index)


def fibonacci_sphere(n: int) -> Tensor:
    """(n, 3) nearly uniform unit vectors (the Fibonacci lattice), float64."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (1 + 5**0.5) * i
    r = (1 - z * z).sqrt()
    return torch.stack([r * phi.cos(), r * phi.sin(), z], 1)


def constant_prediction(kind: str, classes: int, target: Tensor, ignore_index: int = -1) -> Tensor:
    """The best constant prediction of a dense task from its training labels ``target``, as the
    model's raw output of one pixel (C,): the majority class's logits (segmentation,
    ``binary_map``), the mean valid depth, or the unit normal with the least mean angle to the
    valid normals (searched on a 1,000-point lattice over the sphere, then on three ever
    smaller caps around the best, on up to 20,000 pixels)."""
    valid = valid_pixels(kind, target, ignore_index)
    if kind == "segmentation":
        counts = torch.bincount(target[valid].flatten(), minlength=classes)
        return F.one_hot(counts.argmax(), classes).double()
    if kind == "binary_map":
        share = float(target[valid].double().mean())
        return torch.tensor([1.0 if share >= 0.5 else -1.0], dtype=torch.float64)
    if kind == "depth":
        return target[:, 0][valid].double().mean().reshape(1)
    normals = target.permute(0, 2, 3, 1)[valid]  # (P, 3)
    sample = F.normalize(normals[:: max(1, len(normals) // 20_000)].double(), dim=1)
    best = torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64)
    lattice = fibonacci_sphere(1000)
    for radius in (None, 0.1, 0.01, 0.001):  # the whole sphere, then ever smaller caps
        candidates = lattice if radius is None else F.normalize(best + radius * lattice, dim=1)
        mean_angle = torch.acos((sample @ candidates.T).clamp(-1, 1)).mean(0)
        best = candidates[mean_angle.argmin()]
    return best
