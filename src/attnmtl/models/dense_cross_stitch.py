"""Cross-stitch networks for per-pixel tasks: a dilated-ResNet column per task, stitched after
the stem and after every stage, and a DeepLab head per task.

Axes: B batch, K tasks, C channels, H × W pixels.

Misra, Shrivastava, Gupta & Hebert, "Cross-stitch Networks for Multi-task Learning", CVPR 2016,
on the encoder of :mod:`attnmtl.models.resnet_dilated`, as LibMTL's ``Cross_stitch``
architecture applies it to ``resnet_dilated`` for NYUv2: each task has its own encoder column,
and at each of the five stitch points (the stem's output and each stage's) a
:class:`~attnmtl.models.cross_stitch.CrossStitchUnit` replaces every task's feature map by
``x̃_k = Σ_j α_kj x_j``. Only the units are shared; each column and head belongs to its task.
There is no single shared representation, so ``features`` is None and gradient methods run in
``parameters`` mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from attnmtl.core.batch import Inputs
from attnmtl.core.output import MultiTaskOutput
from attnmtl.core.tasks import Task
from attnmtl.models.base import MultiTaskModel
from attnmtl.models.cross_stitch import CrossStitchUnit
from attnmtl.models.registry import register_model
from attnmtl.models.resnet_dilated import (
    DilatedResNet,
    check_image,
    check_rates,
    deeplab_heads,
    init_resnet,
    predict,
)
from attnmtl.models.segnet import check_dense


@register_model("resnet_cross_stitch")
class DilatedResNetCrossStitch(MultiTaskModel):
    """A dilated-ResNet column per task, cross-stitched after the stem and every stage.

    Args:
        tasks: two or more per-pixel tasks (injected).
        input_shape: (C, H, W) of the images, sides divisible by 8 (injected).
        layout: ``image`` (injected).
        widths, blocks, head_width, rates: as :class:`~attnmtl.models.resnet_dilated.
            DilatedResNetHardSharing`'s, for every column and head.
        init_same: each unit's initial α_kk (the off-diagonal entries start at
            (1 − init_same) / (K − 1)).
    """

    def __init__(
        self,
        tasks: Sequence[Task],
        input_shape: tuple[int, ...],
        layout: str = "image",
        widths: Sequence[int] = (16, 16, 32, 64, 64),
        blocks: int | Sequence[int] = 1,
        head_width: int = 32,
        rates: Sequence[int] = (2, 4, 6),
        init_same: float = 0.9,
    ) -> None:
        super().__init__(tasks)
        check_dense(tasks, "resnet_cross_stitch")
        channels, *_ = check_image(tuple(input_shape), layout, "resnet_cross_stitch")
        if len(self.tasks) < 2:
            raise ValueError("model 'resnet_cross_stitch' stitches >= 2 tasks; got one")
        self.columns = nn.ModuleDict(
            {t: DilatedResNet(channels, widths, blocks) for t in self.tasks}
        )
        self.units = nn.ModuleList(CrossStitchUnit(len(self.tasks), init_same) for _ in range(5))
        dim = int(widths[-1])
        self.heads = deeplab_heads(self.tasks, dim, head_width, check_rates(rates))
        init_resnet(self)

    def task_modules(self, task: str) -> list[nn.Module]:
        return [self.columns[task], self.heads[task]]

    def forward(self, inputs: Inputs, lengths: Tensor | None = None) -> MultiTaskOutput:
        assert isinstance(inputs, Tensor)
        columns = [cast(DilatedResNet, self.columns[t]) for t in self.tasks]
        x = self.units[0](torch.stack([c.stem(inputs) for c in columns]))  # (K, B, ...)
        for j in range(4):
            x = self.units[j + 1](torch.stack([c.stages[j](x[k]) for k, c in enumerate(columns)]))
        names = list(self.tasks)
        features = {t: x[k] for k, t in enumerate(names)}
        return MultiTaskOutput(predict(self, self.heads, features, inputs.shape[2:]), {}, None)
