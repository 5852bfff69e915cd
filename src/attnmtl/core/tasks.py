"""Tasks: what a model predicts for each task, how it is scored and how its loss is taken.

Axes: B batch, N labelled samples of one task, C classes / labels / outputs.

Label conventions (what a data set stores for each kind):

================  ==============================  ======================  ==================
kind              prediction                      label                   loss
================  ==============================  ======================  ==================
``binary``        (B, 1) one logit                (B,) 0/1 float          BCE with logits
``multiclass``    (B, C) logits, C = ``size``     (B,) int64 in [0, C)    cross-entropy
``multilabel``    (B, C) logits, C = ``size``     (B, C) 0/1 float        BCE with logits
``regression``    (B, C) values, C = ``size``     (B,) (C = 1) or (B, C)  MSE (or L1, Huber)
================  ==============================  ======================  ==================

Per-pixel (dense) kinds, at the input's resolution H × W (:mod:`attnmtl.core.dense`):

================  ==============================  ======================  ==================
kind              prediction                      label                   loss
================  ==============================  ======================  ==================
``segmentation``  (B, C, H, W) logits             (B, H, W) int64 class,  cross-entropy
                                                  ``ignore_index`` (-1)
                                                  where unlabelled
``depth``         (B, 1, H, W) values             (B, 1, H, W) float;     L1
                                                  0 or non-finite:
                                                  invalid
``normals``       (B, 3, H, W), L2-normalised     (B, 3, H, W) unit       1 − cosine
                                                  vectors; all-zero or
                                                  non-finite: invalid
``binary_map``    (B, 1, H, W) one logit a pixel  (B, H, W) 0/1 float,    BCE with logits
                                                  ``ignore_index``
                                                  where unlabelled
================  ==============================  ======================  ==================

Each task's loss is the mean over the samples labelled for it; which those are is the batch's
``label_mask`` (see :mod:`attnmtl.core.losses`), never a sentinel value inside the labels. A
dense task's loss is the mean over the valid pixels of its labelled samples: the two levels of
missing labels (a sample not labelled for the task, a pixel without ground truth) hold together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from attnmtl.core import dense

TaskKind = Literal[
    "binary",
    "multiclass",
    "multilabel",
    "regression",
    "segmentation",
    "depth",
    "normals",
    "binary_map",
]
TASK_KINDS: tuple[str, ...] = get_args(TaskKind)
DENSE_KINDS = ("segmentation", "depth", "normals", "binary_map")
REGRESSION_LOSSES = ("mse", "l1", "huber")
_DENSE_SIZES = {"depth": 1, "normals": 3, "binary_map": 1}


@dataclass(frozen=True)
class Task:
    """One task of a multi-task problem.

    Args:
        name: identifier (a key of ``preds``, ``labels`` and ``label_mask``).
        kind: ``binary``, ``multiclass``, ``multilabel`` or ``regression``.
        size: classes (multiclass and segmentation, >= 2), labels (multilabel) or outputs
            (regression); 1 for binary, depth and binary_map, 3 for normals (given by default).
        loss: regression loss, ``mse`` (the default when None), ``l1`` or ``huber``; None for
            classification tasks, which always use their likelihood loss.
        ignore_index: the label of unlabelled pixels of a ``segmentation`` or ``binary_map``
            task (-1, as MTAN's and LibMTL's NYUv2 files).
    """

    name: str
    kind: TaskKind
    size: int = 1
    loss: str | None = None
    ignore_index: int = -1

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(
                f"task name {self.name!r}; expected letters, digits, '_' or '-' (not empty)"
            )
        if self.kind not in TASK_KINDS:
            raise ValueError(
                f"task {self.name!r}: kind={self.kind!r}; expected one of: {', '.join(TASK_KINDS)}"
            )
        if self.kind == "binary" and self.size != 1:
            raise ValueError(f"task {self.name!r}: a binary task has size 1, got {self.size!r}")
        if self.kind == "normals" and self.size == 1:  # (the default size: 3 by definition)
            object.__setattr__(self, "size", 3)
        if self.kind in _DENSE_SIZES and self.size != _DENSE_SIZES[self.kind]:
            raise ValueError(
                f"task {self.name!r}: a {self.kind} task has size {_DENSE_SIZES[self.kind]}, "
                f"got {self.size!r}"
            )
        if self.kind in ("multiclass", "segmentation") and self.size < 2:
            raise ValueError(
                f"task {self.name!r}: size={self.size!r}; a {self.kind} task needs >= 2 classes"
            )
        if self.size < 1:
            raise ValueError(f"task {self.name!r}: size={self.size!r}; expected >= 1")
        if self.loss is not None and self.loss not in REGRESSION_LOSSES:
            raise ValueError(
                f"task {self.name!r}: loss={self.loss!r}; expected one of: "
                f"{', '.join(REGRESSION_LOSSES)}"
            )
        if self.kind != "regression" and self.loss is not None:
            raise ValueError(f"task {self.name!r}: loss={self.loss!r} applies to regression only")

    @property
    def out_dim(self) -> int:
        """Width of the model's output for this task."""
        return self.size

    @property
    def is_classification(self) -> bool:
        """True for binary, multiclass and multilabel tasks (per sample)."""
        return self.kind in ("binary", "multiclass", "multilabel")

    @property
    def is_dense(self) -> bool:
        """True for the per-pixel kinds (:data:`DENSE_KINDS`)."""
        return self.kind in DENSE_KINDS

    @property
    def primary_metric(self) -> str:
        """The metric ``summary.json`` always reports: ``accuracy`` or ``mae`` per sample;
        ``miou``, ``abs_err``, ``mean_angle`` or ``f1`` per pixel."""
        if self.is_dense:
            return dense.PRIMARY[self.kind]
        return "mae" if self.kind == "regression" else "accuracy"

    def label_shape(self, batch: int, spatial: tuple[int, ...] = ()) -> tuple[int, ...]:
        """Expected shape of ``batch`` labels (dense kinds: at resolution ``spatial``)."""
        if self.is_dense:
            return dense.label_shape(self.kind, batch, spatial)
        if self.kind == "multilabel" or (self.kind == "regression" and self.size > 1):
            return (batch, self.size)
        return (batch,)

    def label_dtype(self) -> torch.dtype:
        """Storage dtype of labels: int64 for multiclass and segmentation, float32 otherwise."""
        return torch.int64 if self.kind in ("multiclass", "segmentation") else torch.float32

    def compute_loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Mean loss of predictions (N, out_dim, ...) against their labels (see the module
        tables); a dense task's over its valid pixels (NaN when there is none: the caller
        leaves such a task out, :func:`~attnmtl.core.losses.task_losses`)."""
        if self.is_dense:
            return dense.pixel_loss(self.kind, pred, target, self.ignore_index)
        if self.kind == "multiclass":
            return F.cross_entropy(pred, target)
        if self.kind == "binary":
            return F.binary_cross_entropy_with_logits(pred.squeeze(-1), target.to(pred.dtype))
        if self.kind == "multilabel":
            return F.binary_cross_entropy_with_logits(pred, target.to(pred.dtype))
        value = pred.squeeze(-1) if self.size == 1 else pred
        target = target.to(value.dtype)
        if self.loss == "l1":
            return F.l1_loss(value, target)
        if self.loss == "huber":
            return F.huber_loss(value, target)
        return F.mse_loss(value, target)

    def predict(self, pred: Tensor) -> Tensor:
        """Hard predictions in label space: classes, 0/1 labels or regression values (dense:
        a class or 0/1 per pixel, depths, unit normals)."""
        if self.is_dense:
            return dense.predict(self.kind, pred)
        if self.kind == "multiclass":
            return pred.argmax(-1)
        if self.kind == "binary":
            return (pred.squeeze(-1) > 0).long()
        if self.kind == "multilabel":
            return (pred > 0).long()
        return pred.squeeze(-1) if self.size == 1 else pred

    def check_labels(self, labels: Tensor, mask: Tensor | None = None, where: str = "") -> None:
        """Raise ValueError if the labelled entries of ``labels`` are not valid for this task."""
        place = f"{where}: " if where else ""
        if self.is_dense:
            dense.check_labels(
                self.name, self.kind, self.size, self.ignore_index, labels, mask, place
            )
            return
        expected = self.label_shape(labels.shape[0])
        if tuple(labels.shape) != expected:
            raise ValueError(
                f"{place}task {self.name!r} labels have shape "
                f"{tuple(labels.shape)}; expected {expected}"
            )
        values = labels if mask is None else labels[mask]
        if values.numel() == 0:
            return
        if values.is_floating_point() and not bool(torch.isfinite(values).all()):
            raise ValueError(
                f"{place}task {self.name!r} has NaN or infinite labels on labelled samples"
            )
        if self.kind == "multiclass":
            low, high = (int(v) for v in torch.aminmax(values))
            if low < 0 or high >= self.size:
                raise ValueError(
                    f"{place}task {self.name!r} labels lie in [{low}, {high}]; "
                    f"expected classes in [0, {self.size - 1}]"
                )
        elif self.kind in ("binary", "multilabel") and not bool(
            ((values == 0) | (values == 1)).all()
        ):
            raise ValueError(f"{place}task {self.name!r} labels must be 0 or 1")
