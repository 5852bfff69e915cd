"""Multi-gate mixture-of-experts for per-pixel tasks: dilated-ResNet experts, one softmax gate
per task from the image, and a DeepLab head per task.

Axes: B batch, E experts, K tasks, C channels, H × W pixels, F gate inputs.

Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
Mixture-of-Experts", KDD 2018, on the encoder of :mod:`attnmtl.models.resnet_dilated`, as
LibMTL's ``MMoE`` architecture applies it to dense tasks: E expert encoders, and per task a gate
``g^k(x) = softmax(W_k vec(x))`` over the flattened input image that mixes the experts' feature
maps, ``f^k(x) = Σ_e g^k(x)_e f_e(x)``, read by the task's head. ``gate_size`` average-pools the
image to (h, w) before flattening (None: the full image, as LibMTL does; a 288×384 NYUv2 image
is then 331,776 inputs per gate row).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnmtl.core.batch import Inputs
from attnmtl.core.output import MultiTaskOutput
from attnmtl.core.tasks import Task
from attnmtl.models.base import MultiTaskModel
from attnmtl.models.experts import check_count
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


@register_model("resnet_mmoe")
class DilatedResNetMMoE(MultiTaskModel):
    """E dilated-ResNet experts, a softmax gate over them per task, a DeepLab head per task.

    Args:
        tasks: the per-pixel tasks (injected).
        input_shape: (C, H, W) of the images, sides divisible by 8 (injected).
        layout: ``image`` (injected).
        num_experts: E >= 1.
        widths, blocks, head_width, rates: as :class:`~attnmtl.models.resnet_dilated.
            DilatedResNetHardSharing`'s, for every expert and head.
        gate_size: (h, w) the image is average-pooled to before the gates read it; None = the
            full image.

    ``attention[task]`` is the task's gate (B, E), rows summing to one; ``features`` is the
    stack of expert outputs (B, E, C, H/8, W/8) every task mixes.
    """

    gated = True  # attention[task] is the task's gate over the experts

    def __init__(
        self,
        tasks: Sequence[Task],
        input_shape: tuple[int, ...],
        layout: str = "image",
        num_experts: int = 3,
        widths: Sequence[int] = (16, 16, 32, 64, 64),
        blocks: int | Sequence[int] = 1,
        head_width: int = 32,
        rates: Sequence[int] = (2, 4, 6),
        gate_size: Sequence[int] | None = None,
    ) -> None:
        super().__init__(tasks)
        check_dense(tasks, "resnet_mmoe")
        check_count("num_experts", num_experts)
        channels, h, w = check_image(tuple(input_shape), layout, "resnet_mmoe")
        if gate_size is not None:
            size = [int(v) for v in gate_size]
            if len(size) != 2 or not (1 <= size[0] <= h and 1 <= size[1] <= w):
                raise ValueError(
                    f"gate_size={list(gate_size)!r}; expected [h, w] within the images' {h}×{w}"
                )
            h, w = size
        self.gate_size = None if gate_size is None else (h, w)
        self.experts = nn.ModuleList(
            DilatedResNet(channels, widths, blocks) for _ in range(num_experts)
        )
        self.gates = nn.ModuleDict(
            {t: nn.Linear(channels * h * w, num_experts) for t in self.tasks}
        )
        dim = int(widths[-1])
        self.heads = deeplab_heads(self.tasks, dim, head_width, check_rates(rates))
        init_resnet(self)

    def task_modules(self, task: str) -> list[nn.Module]:
        return [self.gates[task], self.heads[task]]

    def gate_labels(self, task: str) -> list[str]:
        """A name per gated expert, for the report."""
        return [f"expert {e}" for e in range(len(self.experts))]

    def forward(self, inputs: Inputs, lengths: Tensor | None = None) -> MultiTaskOutput:
        """Every task's predictions, its gate (B, E) and the expert outputs (B, E, C, h, w)."""
        assert isinstance(inputs, Tensor)
        experts = torch.stack([expert(inputs) for expert in self.experts], 1)  # (B, E, C, h, w)
        image = inputs if self.gate_size is None else F.adaptive_avg_pool2d(inputs, self.gate_size)
        flat = image.flatten(1)  # (B, F)
        mixed, gates = {}, {}
        for name in self.tasks:
            gate = torch.softmax(self.gates[name](flat), -1)  # (B, E)
            mixed[name] = torch.einsum("be,bechw->bchw", gate, experts)
            gates[name] = gate
        return MultiTaskOutput(predict(self, self.heads, mixed, inputs.shape[2:]), gates, experts)
