"""Channel attention by squeeze-and-excitation (Hu, Shen & Sun, "Squeeze-and-Excitation
Networks", CVPR 2018): ``w = σ(W₂ ReLU(W₁ mean_S(x)))``, output ``x ⊙ w`` per channel.

Axes: B batch, C channels, S any spatial axes (1-D or 2-D maps alike).
The weights are per-channel gates in (0, 1), not a distribution.
"""

from __future__ import annotations

from torch import Tensor, nn


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation gate over the channels of a (B, C, *S) feature map.

    Args:
        channels: number of channels C.
        reduction: bottleneck ratio r; the hidden size is ``max(channels // r, min_hidden)``.
        min_hidden: smallest hidden size.
    """

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 4) -> None:
        super().__init__()
        if channels < 1 or reduction < 1 or min_hidden < 1:
            raise ValueError(
                f"channels={channels!r}, reduction={reduction!r}, min_hidden={min_hidden!r}; "
                "expected integers >= 1"
            )
        hidden = max(channels // reduction, min_hidden)
        self.channels = channels
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor, return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Returns ``x`` gated per channel and, with ``return_weights``, the gates (B, C)."""
        if x.dim() < 3 or x.shape[1] != self.channels:
            raise ValueError(f"input {tuple(x.shape)}; expected (B, {self.channels}, *spatial)")
        gates = self.fc(x.flatten(2).mean(-1))  # (B, C)
        out = x * gates.view(*gates.shape, *([1] * (x.dim() - 2)))
        return (out, gates) if return_weights else out
