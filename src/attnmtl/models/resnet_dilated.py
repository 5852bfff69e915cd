"""A dilated ResNet encoder with DeepLab heads for per-pixel tasks, and hard sharing on it.

Axes: B batch, C channels, H × W pixels, K tasks.

The encoder follows LibMTL's ``resnet_dilated`` (the NYUv2 and Cityscapes examples; Yu, Koltun &
Funkhouser, "Dilated Residual Networks", CVPR 2017): a ResNet whose last two stages replace
their stride by dilation (2, then 4), so the output keeps 1/8 of the input's resolution instead
of 1/32. The stem is a 7×7 stride-2 conv-BN-ReLU and a 3×3 stride-2 max-pool; stage 1 keeps the
resolution, stage 2 halves it, stages 3 and 4 dilate. Each stage is ``blocks`` basic residual
blocks (two 3×3 convs; He et al., CVPR 2016); ``widths`` sets the stem's and the four stages'
widths — ResNet-18's are ``[64, 64, 128, 256, 512]``, the CPU default is
``[16, 16, 32, 64, 64]``. LibMTL loads an ImageNet-pretrained ResNet-50; nothing is downloaded
here, so the encoder starts from He initialisation.

Each task's head is DeepLabv3's (Chen et al., "Rethinking Atrous Convolution for Semantic Image
Segmentation", 2017), as LibMTL's ``DeepLabHead``: atrous spatial pyramid pooling (a 1×1 conv,
one 3×3 conv per rate in ``rates``, and global average pooling broadcast back, each to
``head_width`` channels with BN-ReLU, concatenated, projected by a 1×1 conv-BN-ReLU with
dropout 0.5), then a 3×3 conv-BN-ReLU and a 1×1 conv to the task's channels, upsampled
bilinearly to the input's size. LibMTL's rates ``(12, 24, 36)`` are for 1/8 maps of 288×384
images (36×48); the default ``(2, 4, 6)`` suits the CPU recipe's 6×8 maps.
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
from attnmtl.models.registry import register_model
from attnmtl.models.segnet import check_dense, finish

OUTPUT_STRIDE = 8  # stem ×4, stage 2 ×2; stages 3 and 4 dilate instead
DILATIONS = (1, 1, 2, 4)  # the four stages'
STRIDES = (1, 2, 1, 1)


class BasicBlock(nn.Module):
    """He et al.'s basic residual block: ``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``,
    the shortcut a 1×1 conv-BN when the width or stride changes."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        pad = dilation
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, pad, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, pad, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class DilatedResNet(nn.Module):
    """The encoder: stem and four stages, output (B, widths[-1], H/8, W/8).

    Args:
        in_channels: the images' channels.
        widths: the stem's and the four stages' widths (5 values).
        blocks: basic blocks per stage, one count for all or one per stage (4 values).
    """

    def __init__(
        self, in_channels: int, widths: Sequence[int], blocks: int | Sequence[int] = 1
    ) -> None:
        super().__init__()
        counts = stage_counts(widths, blocks)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        stages = []
        for j in range(4):
            c_in, c_out = widths[j], widths[j + 1]
            layers = [BasicBlock(c_in, c_out, STRIDES[j], DILATIONS[j])]
            layers += [BasicBlock(c_out, c_out, 1, DILATIONS[j]) for _ in range(counts[j] - 1)]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.dim = widths[-1]

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x


def stage_counts(widths: Sequence[int], blocks: int | Sequence[int]) -> list[int]:
    """Blocks per stage (4 values); ValueError for bad widths or counts."""
    if len(widths) != 5 or any(int(w) < 1 for w in widths):
        raise ValueError(
            f"widths={list(widths)!r}; expected 5 widths >= 1 (the stem's and four stages')"
        )
    counts = [blocks] * 4 if isinstance(blocks, int) else list(blocks)
    if len(counts) != 4 or any(int(c) < 1 for c in counts):
        raise ValueError(f"blocks={blocks!r}; expected a count >= 1, or 4 of them (per stage)")
    return [int(c) for c in counts]


def aspp_branch(c_in: int, c_out: int, rate: int) -> nn.Sequential:
    """One ASPP branch: a 1×1 conv (``rate`` 0) or a 3×3 conv at dilation ``rate``, BN, ReLU."""
    conv = (
        nn.Conv2d(c_in, c_out, 1, bias=False)
        if rate == 0
        else nn.Conv2d(c_in, c_out, 3, padding=rate, dilation=rate, bias=False)
    )
    return nn.Sequential(conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: the 1×1 branch, a 3×3 branch per rate and the image
    pooling branch, concatenated and projected to ``width`` channels (dropout 0.5)."""

    def __init__(self, c_in: int, width: int, rates: Sequence[int]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(aspp_branch(c_in, width, r) for r in (0, *rates))
        self.pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(c_in, width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.project = nn.Sequential(
            nn.Conv2d(width * (len(rates) + 2), width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
        )

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.pool(x).expand(-1, -1, *x.shape[2:])
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], 1))


class DeepLabHead(nn.Module):
    """DeepLabv3's head: ASPP, a 3×3 conv-BN-ReLU and a 1×1 conv to ``out`` channels."""

    def __init__(self, c_in: int, out: int, width: int, rates: Sequence[int]) -> None:
        super().__init__()
        self.aspp = ASPP(c_in, width, rates)
        self.conv = aspp_branch(width, width, 1)
        self.out = nn.Conv2d(width, out, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.conv(self.aspp(x)))


def check_image(input_shape: tuple[int, ...], layout: str, name: str) -> tuple[int, int, int]:
    """(C, H, W) of the images, sides divisible by the output stride; ValueError otherwise."""
    if layout != "image" or len(input_shape) != 3:
        raise ValueError(
            f"model {name!r} needs images (C, H, W); got layout {layout!r} and input shape "
            f"{tuple(input_shape)}"
        )
    c, h, w = (int(v) for v in input_shape)
    if h % OUTPUT_STRIDE or w % OUTPUT_STRIDE:
        raise ValueError(
            f"model {name!r} needs image sides divisible by {OUTPUT_STRIDE}; the images are {h}×{w}"
        )
    return c, h, w


def check_rates(rates: Sequence[int]) -> list[int]:
    """The ASPP rates as ints >= 1; ValueError otherwise."""
    values = [int(r) for r in rates]
    if not values or any(r < 1 for r in values):
        raise ValueError(f"rates={list(rates)!r}; expected one or more dilation rates >= 1")
    return values


def deeplab_heads(
    tasks: dict[str, Task], c_in: int, width: int, rates: Sequence[int]
) -> nn.ModuleDict:
    """One DeepLab head per task, reading ``c_in`` channels."""
    if width < 1:
        raise ValueError(f"head_width={width!r}; expected >= 1")
    return nn.ModuleDict(
        {t: DeepLabHead(c_in, task.out_dim, width, rates) for t, task in tasks.items()}
    )


def init_resnet(model: nn.Module) -> None:
    """He (fan-out) initialisation of the convolutions, BatchNorm at 1 and 0 (torchvision's
    ResNet initialisation)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def predict(
    model: MultiTaskModel, heads: nn.ModuleDict, features: dict[str, Tensor], size: Sequence[int]
) -> dict[str, Tensor]:
    """Every task's head on its features, upsampled bilinearly to ``size`` (H, W)."""
    preds = {}
    for name, task in model.tasks.items():
        raw = heads[name](features[name])
        raw = F.interpolate(raw, size=tuple(size), mode="bilinear", align_corners=True)
        preds[name] = finish(task, raw)
    return preds


@register_model("resnet_dilated")
class DilatedResNetHardSharing(MultiTaskModel):
    """Hard sharing on a dilated ResNet (LibMTL's HPS with ``resnet_dilated`` and
    ``DeepLabHead``): one shared encoder, one DeepLab head per task. The encoder's output
    (B, widths[-1], H/8, W/8) is the shared representation ``features`` mode splits at.

    Args:
        tasks: the per-pixel tasks (injected).
        input_shape: (C, H, W) of the images, sides divisible by 8 (injected).
        layout: ``image`` (injected).
        widths: the stem's and the four stages' widths (default ``[16, 16, 32, 64, 64]``).
        blocks: basic blocks per stage (1; ResNet-18: 2).
        head_width: the DeepLab heads' width (LibMTL: 256).
        rates: the ASPP's dilation rates (LibMTL: ``[12, 24, 36]`` for 288×384 images).
    """

    splits_features = True

    def __init__(
        self,
        tasks: Sequence[Task],
        input_shape: tuple[int, ...],
        layout: str = "image",
        widths: Sequence[int] = (16, 16, 32, 64, 64),
        blocks: int | Sequence[int] = 1,
        head_width: int = 32,
        rates: Sequence[int] = (2, 4, 6),
    ) -> None:
        super().__init__(tasks)
        check_dense(tasks, "resnet_dilated")
        channels, *_ = check_image(tuple(input_shape), layout, "resnet_dilated")
        self.encoder = DilatedResNet(channels, widths, blocks)
        self.heads = deeplab_heads(self.tasks, self.encoder.dim, head_width, check_rates(rates))
        init_resnet(self)

    def task_modules(self, task: str) -> list[nn.Module]:
        return [self.heads[task]]

    def forward(self, inputs: Inputs, lengths: Tensor | None = None) -> MultiTaskOutput:
        assert isinstance(inputs, Tensor)
        features = self.encoder(inputs)
        preds = predict(self, self.heads, self.branch(features), inputs.shape[2:])
        return MultiTaskOutput(preds, {}, features)
