"""Small 1-D and 2-D convolutional encoders with optional spatial or channel attention.

Axes: B batch, C channels, L length (1-D), H W height and width (2-D), S flattened positions.

Each block is Conv → BatchNorm → ReLU → [attention] → MaxPool. Every block's output is returned
(``feature_maps``) so that activation-based attention transfer can read them; the last map is
flattened to a (B, S, C) sequence and pooled (attention pooling gives a weight per position,
reshaped to the map's spatial size for pictures).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from attnmtl.attention import ChannelAttention, SpatialAttention
from attnmtl.encoders.output import EncoderOutput
from attnmtl.encoders.pooling import apply_pooling, make_pooling, pooled_dim

BLOCK_ATTENTIONS = ("spatial", "channel", "none")


class ConvBlock(nn.Module):
    """Conv → BN → ReLU → optional attention → max-pool, for 1-D or 2-D maps."""

    def __init__(
        self, cin: int, cout: int, kernel_size: int, dims: int, attention: str, pool: int
    ) -> None:
        super().__init__()
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        norm = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
        self.conv = nn.Sequential(
            conv(cin, cout, kernel_size, padding=kernel_size // 2, bias=False),
            norm(cout),
            nn.ReLU(inplace=True),
        )
        self.attention: nn.Module | None = None
        if attention == "spatial":
            self.attention = SpatialAttention(cout, dims=dims)
        elif attention == "channel":
            self.attention = ChannelAttention(cout)
        pooler = nn.MaxPool1d if dims == 1 else nn.MaxPool2d
        self.pool: nn.Module = pooler(pool, ceil_mode=True) if pool > 1 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.attention is not None:
            x = self.attention(x)
        return self.pool(x)


class ConvEncoder(nn.Module):
    """A small CNN over (B, C, L) or (B, C, H, W) inputs returning pooled features and maps.

    Args:
        in_channels: input channels (a (B, L) or (B, H, W) input is read as one channel).
        channels: output channels of each block.
        kernel_size: odd convolution kernel size (``same`` padding).
        dims: 1 or 2 spatial axes.
        attention: per-block ``spatial`` (MTAN mask), ``channel`` (squeeze-excitation) or ``none``.
        downsample: max-pool factor after each block (1 = none).
        pooling: ``attention``, ``mean``, ``max`` or an ``nn.Module`` over the last map's positions.
        pooling_options: options of :class:`~attnmtl.attention.AttentionPooling`
            (``num_queries``, ``hidden_dim``, ``selection``...), with ``pooling='attention'``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: tuple[int, ...] | list[int] = (32, 64, 64),
        kernel_size: int = 3,
        dims: int = 1,
        attention: str = "none",
        downsample: int = 2,
        pooling: str | nn.Module = "attention",
        pooling_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if dims not in (1, 2):
            raise ValueError(f"dims={dims!r}; expected 1 or 2")
        if attention not in BLOCK_ATTENTIONS:
            raise ValueError(
                f"attention={attention!r}; expected one of: {', '.join(BLOCK_ATTENTIONS)}"
            )
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={kernel_size!r}; expected an odd size >= 1")
        if in_channels < 1 or not channels or min(channels) < 1 or downsample < 1:
            raise ValueError(
                f"in_channels={in_channels!r}, channels={list(channels)!r}, "
                f"downsample={downsample!r}; expected positive sizes and at least one block"
            )
        self.in_channels, self.dims = in_channels, dims
        sizes = [in_channels, *channels]
        self.blocks = nn.ModuleList(
            ConvBlock(cin, cout, kernel_size, dims, attention, downsample)
            for cin, cout in itertools.pairwise(sizes)
        )
        self.dim = sizes[-1]
        self.pool = make_pooling(pooling, self.dim, pooling_options)
        self.out_dim = pooled_dim(self.pool, self.dim)

    def forward(self, x: Tensor) -> EncoderOutput:
        """Encode ``x`` (B, C, *S); returns pooled (B, D), the last map as (B, S, C), all maps.

        ``attention`` (with attention pooling) has the last map's spatial shape (B, *S_last).
        """
        if x.dim() == self.dims + 1 and self.in_channels == 1:
            x = x.unsqueeze(1)  # (B, 1, *S)
        if x.dim() != self.dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"input {tuple(x.shape)}; expected (B, {self.in_channels}, "
                f"{'L' if self.dims == 1 else 'H, W'})"
            )
        maps = []
        for block in self.blocks:
            x = block(x)
            maps.append(x)
        seq = x.flatten(2).transpose(1, 2)  # (B, S, C)
        pooled, weights = apply_pooling(self.pool, seq, None)
        if weights is not None and weights.dim() == 2:
            weights = weights.view(x.shape[0], *x.shape[2:])  # (B, *S_last)
        return EncoderOutput(pooled, seq, None, weights, feature_maps=maps)
