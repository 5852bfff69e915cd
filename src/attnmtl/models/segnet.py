"""SegNet encoder–decoder models for per-pixel tasks: hard sharing and MTAN as published.

Axes: B batch, C channels, H × W pixels (H and W divisible by 2^L for L levels), K tasks.

The trunk is the SegNet of MTAN's official code (lorenmt/mtan, ``im2im_pred/model_segnet_*.py``;
Badrinarayanan, Kendall & Cipolla, "SegNet", TPAMI 2017): L encoder levels, each a first
3×3 conv-BN-ReLU to the level's width and ``convs − 1`` more, then 2×2 max-pooling that keeps its
indices; L decoder levels, each max-unpooling with the matching encoder's indices, a first conv
to the next-shallower width and ``convs − 1`` more. ``widths`` sets the levels' widths: MTAN's
NYUv2 network is ``[64, 128, 256, 512, 512]`` with ``convs: [2, 2, 3, 3, 3]``; the CPU default
here is ``[16, 32, 64, 64]`` with 2 convs everywhere (44.2M parameters for the former with
three tasks, as the paper's). Initialisation is the official code's. Each task's head is MTAN's:
a 3×3 conv at the first width and a 1×1 conv to the task's channels, at the input's
resolution.
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


def conv_bn(c_in: int, c_out: int, kernel: int = 3) -> nn.Sequential:
    """Conv (same padding) → BatchNorm → ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


Convs = int | Sequence[int]


def check_shape(
    input_shape: tuple[int, ...], layout: str, widths: Sequence[int], convs: Convs, name: str
) -> tuple[int, list[int]]:
    """The images' channels and the convs of each level, checked for an L-level SegNet on
    ``input_shape`` (C, H, W); ValueError otherwise."""
    if layout != "image" or len(input_shape) != 3:
        raise ValueError(
            f"model {name!r} needs images (C, H, W); the data set gives {layout} inputs of "
            f"shape {tuple(input_shape)}"
        )
    if not widths or any(int(w) < 1 for w in widths):
        raise ValueError(f"widths={list(widths)!r}; expected one or more positive widths")
    counts = [convs] * len(widths) if isinstance(convs, int) else list(convs)
    if len(counts) != len(widths) or any(
        isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in counts
    ):
        raise ValueError(
            f"convs={convs!r}; expected an integer >= 1, or one per level ({len(widths)})"
        )
    c, h, w = (int(v) for v in input_shape)
    factor = 2 ** len(widths)
    if h % factor or w % factor:
        raise ValueError(
            f"model {name!r} with {len(widths)} levels needs image sides divisible by {factor}; "
            f"the images are {h}×{w} (use fewer widths or resize the images)"
        )
    return c, counts


class SegNetEncoder(nn.Module):
    """The encoder: per level a first conv, ``convs − 1`` more, and max-pooling with indices.

    ``forward`` returns, per level, the first conv's output, the level's output (before
    pooling) and the pooling indices, and the pooled bottleneck.
    """

    def __init__(self, channels: int, widths: Sequence[int], convs: Sequence[int]) -> None:
        super().__init__()
        ins = [channels, *widths[:-1]]
        self.first = nn.ModuleList(conv_bn(a, b) for a, b in zip(ins, widths, strict=True))
        self.rest = nn.ModuleList(
            nn.Sequential(*(conv_bn(w, w) for _ in range(n - 1)))
            for w, n in zip(widths, convs, strict=True)
        )

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[Tensor], list[Tensor], Tensor]:
        firsts, outs, indices = [], [], []
        for first, rest in zip(self.first, self.rest, strict=True):
            u = first(x)
            out = rest(u)
            x, index = F.max_pool2d(out, 2, 2, return_indices=True)
            firsts.append(u)
            outs.append(out)
            indices.append(index)
        return firsts, outs, indices, x


class SegNetDecoder(nn.Module):
    """The decoder: per level (deepest first) max-unpooling with the encoder's indices, a first
    conv to the next-shallower width and ``convs − 1`` more; ends at ``widths[0]``.

    ``forward`` returns, per level, the unpooled input, the first conv's output and the level's
    output.
    """

    def __init__(self, widths: Sequence[int], convs: Sequence[int]) -> None:
        super().__init__()
        deep = list(reversed(widths))  # input width of each decoder level
        outs = [*deep[1:], widths[0]]
        self.first = nn.ModuleList(conv_bn(a, b) for a, b in zip(deep, outs, strict=True))
        self.rest = nn.ModuleList(  # the mirror of the encoder's level
            nn.Sequential(*(conv_bn(w, w) for _ in range(n - 1)))
            for w, n in zip(outs, reversed(convs), strict=True)
        )

    def forward(
        self, x: Tensor, indices: Sequence[Tensor]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        ups, firsts, outs = [], [], []
        for level, (first, rest) in enumerate(zip(self.first, self.rest, strict=True)):
            up = F.max_unpool2d(x, indices[-level - 1], (2, 2), (2, 2))
            u = first(up)
            x = rest(u)
            ups.append(up)
            firsts.append(u)
            outs.append(x)
        return ups, firsts, outs


def init_weights(model: nn.Module) -> None:
    """MTAN's initialisation: Xavier-normal convolutions with zero bias, BatchNorm at 1 and 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def task_head(width: int, out: int) -> nn.Sequential:
    """MTAN's prediction layer: a 3×3 conv at ``width`` and a 1×1 conv to ``out`` channels."""
    return nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.Conv2d(width, out, 1))


def finish(task: Task, pred: Tensor) -> Tensor:
    """A head's raw output in the task's prediction convention (normals L2-normalised, as
    MTAN's ``pred_task3 / ‖·‖``; logits and depths as they are)."""
    return F.normalize(pred, dim=1) if task.kind == "normals" else pred


def check_dense(tasks: Sequence[Task], name: str) -> None:
    """ValueError unless every task is per-pixel."""
    flat = [t.name for t in tasks if not t.is_dense]
    if flat:
        raise ValueError(
            f"model {name!r} predicts per-pixel tasks; tasks {flat} are per-sample "
            "(use a per-sample model such as attention_mtl for them)"
        )


def task_heads(tasks: dict[str, Task], width: int) -> nn.ModuleDict:
    """One MTAN prediction head per task, from ``width`` channels."""
    return nn.ModuleDict({t: task_head(width, task.out_dim) for t, task in tasks.items()})


def trunk_shape(
    tasks: Sequence[Task],
    input_shape: tuple[int, ...],
    layout: str,
    widths: Sequence[int],
    convs: Convs,
    name: str,
) -> tuple[int, list[int], list[int]]:
    """The image channels, the widths and the convs of each level of model ``name``'s SegNet,
    checked against its tasks and inputs (:func:`check_dense`, :func:`check_shape`)."""
    check_dense(tasks, name)
    channels, counts = check_shape(tuple(input_shape), layout, widths, convs, name)
    return channels, [int(w) for w in widths], counts


@register_model("segnet")
class SegNetHardSharing(MultiTaskModel):
    """Hard parameter sharing on SegNet: the encoder is shared, each task has its own decoder
    (unpooling with the shared encoder's indices) and head — the dense counterpart of
    ``hard_sharing`` (LibMTL's HPS: a shared encoder, a decoder per task). The pooled
    bottleneck (B, C_L, H/2^L, W/2^L) is the shared representation ``features`` mode splits
    at (the pooling indices carry no gradient).

    Args:
        tasks: the per-pixel tasks (injected).
        input_shape: (C, H, W) of the images (injected).
        layout: ``image`` (injected).
        widths: channel width of each level (default ``[16, 32, 64, 64]``).
        convs: 3×3 convs per level, one count for all or one per level (2; MTAN's NYUv2
            network: ``[2, 2, 3, 3, 3]``).
    """

    splits_features = True

    def __init__(
        self,
        tasks: Sequence[Task],
        input_shape: tuple[int, ...],
        layout: str = "image",
        widths: Sequence[int] = (16, 32, 64, 64),
        convs: Convs = 2,
    ) -> None:
        super().__init__(tasks)
        channels, levels, counts = trunk_shape(tasks, input_shape, layout, widths, convs, "segnet")
        self.encoder = SegNetEncoder(channels, levels, counts)
        self.decoders = nn.ModuleDict({t: SegNetDecoder(levels, counts) for t in self.tasks})
        self.heads = task_heads(self.tasks, levels[0])
        init_weights(self)

    def task_modules(self, task: str) -> list[nn.Module]:
        return [self.decoders[task], self.heads[task]]

    def forward(self, inputs: Inputs, lengths: Tensor | None = None) -> MultiTaskOutput:
        assert isinstance(inputs, Tensor)
        _, _, indices, bottleneck = self.encoder(inputs)
        branches = self.branch(bottleneck)
        preds = {}
        for name, task in self.tasks.items():
            _, _, outs = self.decoders[name](branches[name], indices)
            preds[name] = finish(task, self.heads[name](outs[-1]))
        return MultiTaskOutput(preds, {}, bottleneck)


def attention_block(c_in: int, c_mid: int, c_out: int) -> nn.Sequential:
    """MTAN's attention module: 1×1 conv-BN-ReLU, 1×1 conv-BN, sigmoid — a soft mask."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_mid, 1),
        nn.BatchNorm2d(c_mid),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_mid, c_out, 1),
        nn.BatchNorm2d(c_out),
        nn.Sigmoid(),
    )


@register_model("segnet_mtan")
class SegNetMTAN(MultiTaskModel):
    """Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019: one
    shared SegNet (encoder and decoder) and, per task, a soft attention module at every encoder
    and every decoder level, as the paper and its official code define them.

    Encoder level j: the task's mask ``a_j = g_j([u_j, t_{j−1}])`` (``u_j`` the shared level's
    first conv output, ``t_{j−1}`` the task's previous feature; ``u_0`` alone at j = 0) gates
    the shared level's output, ``â_j = a_j ⊙ p_j``; a 3×3 conv shared by the tasks (the
    official ``encoder_block_att``) takes ``â_j`` to the next level's width, then 2×2
    max-pooling gives ``t_j``. Decoder level j: ``t`` is upsampled ×2 (bilinear), passed through
    the shared ``decoder_block_att`` conv to the level's input width, concatenated with the
    shared unpooled features, and the task's mask gates the shared level's output. Each task's
    head reads its last gated decoder feature. The masks are in ``attention`` (task → the last
    decoder level's mask, (B, C, H, W)). No single shared representation: gradient methods run
    in ``parameters`` mode.

    Args:
        tasks: the per-pixel tasks (injected).
        input_shape: (C, H, W) of the images (injected).
        layout: ``image`` (injected).
        widths: channel width of each level (default ``[16, 32, 64, 64]``).
        convs: 3×3 convs per level, one count for all or one per level (2; MTAN's NYUv2
            network: ``[2, 2, 3, 3, 3]``).
    """

    def __init__(
        self,
        tasks: Sequence[Task],
        input_shape: tuple[int, ...],
        layout: str = "image",
        widths: Sequence[int] = (16, 32, 64, 64),
        convs: Convs = 2,
    ) -> None:
        super().__init__(tasks)
        channels, widths, counts = trunk_shape(
            tasks, input_shape, layout, widths, convs, "segnet_mtan"
        )
        self.encoder = SegNetEncoder(channels, widths, counts)
        self.decoder = SegNetDecoder(widths, counts)
        levels = len(widths)
        nxt = [*widths[1:], widths[-1]]
        self.encoder_block_att = nn.ModuleList(
            conv_bn(w, n) for w, n in zip(widths, nxt, strict=True)
        )
        deep = list(reversed(widths))  # decoder level j's input width
        outs = [*deep[1:], widths[0]]  # its output width
        # decoder_block_att[j]: the task feature (the encoder's last, or decoder level j−1's)
        # → level j's output width; decoder_att[j] reads it beside the unpooled input
        feature_in = [widths[-1], *outs[:-1]]
        self.decoder_block_att = nn.ModuleList(
            conv_bn(a, b) for a, b in zip(feature_in, outs, strict=True)
        )
        self.encoder_att = nn.ModuleDict(
            {
                t: nn.ModuleList(
                    attention_block(
                        widths[j] if j == 0 else widths[j] + widths[j], widths[j], widths[j]
                    )
                    for j in range(levels)
                )
                for t in self.tasks
            }
        )
        self.decoder_att = nn.ModuleDict(
            {
                t: nn.ModuleList(
                    attention_block(deep[j] + outs[j], outs[j], outs[j]) for j in range(levels)
                )
                for t in self.tasks
            }
        )
        self.heads = task_heads(self.tasks, widths[0])
        init_weights(self)

    def task_modules(self, task: str) -> list[nn.Module]:
        return [self.encoder_att[task], self.decoder_att[task], self.heads[task]]

    def forward(self, inputs: Inputs, lengths: Tensor | None = None) -> MultiTaskOutput:
        assert isinstance(inputs, Tensor)
        firsts, outs, indices, bottleneck = self.encoder(inputs)
        ups, _, dec_outs = self.decoder(bottleneck, indices)
        preds, masks = {}, {}
        for name, task in self.tasks.items():
            feature: Tensor | None = None
            encoder_att, decoder_att = self.encoder_att[name], self.decoder_att[name]
            assert isinstance(encoder_att, nn.ModuleList) and isinstance(decoder_att, nn.ModuleList)
            for j, att in enumerate(encoder_att):
                source = firsts[j] if feature is None else torch.cat([firsts[j], feature], 1)
                gated = att(source) * outs[j]
                feature = F.max_pool2d(self.encoder_block_att[j](gated), 2, 2)
            assert feature is not None
            mask = feature
            for j, att in enumerate(decoder_att):
                up = F.interpolate(feature, scale_factor=2, mode="bilinear", align_corners=True)
                mask = att(torch.cat([ups[j], self.decoder_block_att[j](up)], 1))
                feature = mask * dec_outs[j]
            masks[name] = mask
            preds[name] = finish(task, self.heads[name](feature))
        return MultiTaskOutput(preds, masks, None)
