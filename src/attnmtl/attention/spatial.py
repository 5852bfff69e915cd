"""Spatial attention masks for feature maps, as in MTAN (Liu, Johns & Davison, "End-to-End
Multi-Task Learning with Attention", CVPR 2019):
``mask = Sigmoid(BN(Conv1x1(ReLU(BN(Conv1x1(x))))))``, attended features ``mask ⊙ p``.

Axes: B batch, C channels, S spatial axes (L for 1-D maps, H W for 2-D maps).

In MTAN the mask is computed from the shared features (concatenated with the previous attended
features) and multiplies another feature map of the same block; ``forward(x, features=...)``
supports that, and ``forward(x)`` gates ``x`` itself. The mask is an element-wise gate in (0, 1),
not a distribution: it does not sum to one.
"""

from __future__ import annotations

from torch import Tensor, nn


def conv_bn(dims: int, cin: int, cout: int) -> tuple[nn.Module, nn.Module]:
    """A 1×1 convolution and batch norm for 1-D or 2-D maps."""
    if dims == 1:
        return nn.Conv1d(cin, cout, 1), nn.BatchNorm1d(cout)
    return nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout)


class SpatialAttention(nn.Module):
    """MTAN attention mask over 1-D or 2-D feature maps.

    Args:
        in_channels: channels of the input the mask is computed from.
        out_channels: channels of the mask (default ``in_channels``, one gate per channel and
            position as in MTAN; 1 gives a single spatial map shared by all channels).
        hidden_channels: channels after the first 1×1 convolution (default ``out_channels``).
        dims: 1 for (B, C, L) maps, 2 for (B, C, H, W) maps.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        hidden_channels: int | None = None,
        dims: int = 2,
    ) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        hidden_channels = out_channels if hidden_channels is None else hidden_channels
        if dims not in (1, 2):
            raise ValueError(f"dims={dims!r}; expected 1 or 2")
        if min(in_channels, out_channels, hidden_channels) < 1:
            raise ValueError(
                f"in_channels={in_channels!r}, out_channels={out_channels!r}, "
                f"hidden_channels={hidden_channels!r}; expected sizes >= 1"
            )
        self.dims, self.in_channels, self.out_channels = dims, in_channels, out_channels
        conv1, bn1 = conv_bn(dims, in_channels, hidden_channels)
        conv2, bn2 = conv_bn(dims, hidden_channels, out_channels)
        self.net = nn.Sequential(conv1, bn1, nn.ReLU(inplace=True), conv2, bn2, nn.Sigmoid())

    def forward(
        self, x: Tensor, features: Tensor | None = None, return_weights: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Gate ``features`` (default ``x``) with the mask computed from ``x`` (B, C_in, *S).

        Returns the gated features and, with ``return_weights``, the mask (B, C_out, *S).
        """
        if x.dim() != self.dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"input {tuple(x.shape)}; expected (B, {self.in_channels}, "
                f"{'L' if self.dims == 1 else 'H, W'})"
            )
        mask = self.net(x)  # (B, C_out, *S)
        target = x if features is None else features
        if (
            target.shape[0] != mask.shape[0]
            or target.shape[2:] != mask.shape[2:]
            or self.out_channels not in (1, target.shape[1])
        ):
            raise ValueError(
                f"features {tuple(target.shape)} cannot be gated by a mask {tuple(mask.shape)}"
            )
        out = mask * target
        return (out, mask) if return_weights else out
