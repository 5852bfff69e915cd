"""One mini-batch of a multi-task data set.

Axes: B batch, T time, F features, C channels, K tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

Inputs = Tensor | dict[str, Tensor]


def move_inputs(inputs: Inputs, device: torch.device | str, non_blocking: bool = False) -> Inputs:
    """``inputs`` (a tensor or a dict of tensors) on ``device``."""
    if isinstance(inputs, Tensor):
        return inputs.to(device, non_blocking=non_blocking)
    return {k: v.to(device, non_blocking=non_blocking) for k, v in inputs.items()}


@dataclass
class Batch:
    """Inputs, per-task labels and per-task label masks of B samples.

    Attributes:
        inputs: (B, T, F) sequences, (B, C, *S) images, or a dict of such tensors.
        labels: task → labels in that task's convention (:mod:`attnmtl.core.tasks`); entries of
            samples not labelled for the task hold an arbitrary filler and must never be read.
        label_mask: task → (B,) bool, True where the sample is labelled for the task.
        lengths: (B,) real lengths of right-padded sequences, or None.
        index: (B,) positions of the samples in their data set (on the CPU), when known: a
            frozen teacher's outputs can be cached by it.
        anchors: regression task → (B, 2) per-sample ``(c, s)`` its labels are relative to
            (``c + s · label`` is the natural value; :mod:`attnmtl.data.windows`).
    """

    inputs: Inputs
    labels: dict[str, Tensor]
    label_mask: dict[str, Tensor]
    lengths: Tensor | None = None
    index: Tensor | None = None
    anchors: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(next(iter(self.label_mask.values())).shape[0])

    def rows(self, rows: Tensor) -> Batch:
        """The samples at positions ``rows`` (a long tensor on the batch's device)."""
        inputs = (
            self.inputs[rows]
            if isinstance(self.inputs, Tensor)
            else {k: v[rows] for k, v in self.inputs.items()}
        )
        return Batch(
            inputs,
            {k: v[rows] for k, v in self.labels.items()},
            {k: v[rows] for k, v in self.label_mask.items()},
            None if self.lengths is None else self.lengths[rows],
            None if self.index is None else self.index[rows.cpu()],
            {k: v[rows] for k, v in self.anchors.items()},
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """This batch on ``device``."""
        return Batch(
            move_inputs(self.inputs, device, non_blocking),
            {k: v.to(device, non_blocking=non_blocking) for k, v in self.labels.items()},
            {k: v.to(device, non_blocking=non_blocking) for k, v in self.label_mask.items()},
            None if self.lengths is None else self.lengths.to(device, non_blocking=non_blocking),
            self.index,
            {k: v.to(device, non_blocking=non_blocking) for k, v in self.anchors.items()},
        )
