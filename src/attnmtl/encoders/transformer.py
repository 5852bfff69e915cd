"""A pre-norm Transformer encoder on attnmtl's :class:`~attnmtl.attention.MultiHeadAttention`.

Axes: B batch, T time, F input features, D model width, H heads.

Pre-norm layers (x + Attn(LN(x)), then x + FFN(LN(x)), a final LN) as in GPT-2 and timm's ViT,
which train stably without warm-up tricks at small scale. Inputs are either feature sequences
(B, T, F), projected to D, or token ids (B, T), embedded. Key-padding masks reach every layer;
per-layer attention weights are returned on request (taking the reference path).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from attnmtl.attention import MultiHeadAttention
from attnmtl.encoders.output import EncoderOutput
from attnmtl.encoders.pooling import apply_pooling, make_pooling, pooled_dim, resolve_mask
from attnmtl.encoders.positional import PositionalEncoding


class TransformerEncoderLayer(nn.Module):
    """One pre-norm layer: self-attention then a GELU feed-forward block, each residual."""

    def __init__(self, dim: int, num_heads: int, ff_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        ff_dim = 4 * dim if ff_dim is None else ff_dim
        if ff_dim < 1:
            raise ValueError(f"ff_dim={ff_dim!r}; expected >= 1")
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(
            nn.Linear(dim, ff_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        causal: bool = False,
        return_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """(B, T, D) -> (B, T, D), and the weights (B, H, T, T) when asked for."""
        h = self.norm1(x)
        weights = None
        if return_weights:
            a, weights = self.attn(h, key_padding_mask=mask, causal=causal, return_weights=True)
        else:
            a = self.attn(h, key_padding_mask=mask, causal=causal)
        x = x + self.drop(a)
        x = x + self.drop(self.ff(self.norm2(x)))
        return x, weights


class TransformerEncoder(nn.Module):
    """Input projection or embedding, positions, pre-norm layers, final norm and pooling.

    Args:
        input_dim: features F per step (feature input); give this or ``vocab_size``.
        dim: model width D.
        num_layers: number of layers.
        num_heads: attention heads per layer (must divide ``dim``).
        ff_dim: feed-forward hidden size (default 4 D).
        dropout: dropout on attention weights, residual branches and embeddings.
        max_len: longest sequence the positional encoding accepts.
        positional: ``sinusoidal``, ``learned`` or ``none``.
        vocab_size: size of a token vocabulary (token-id input).
        padding_idx: token id of padding, with ``vocab_size``: its embedding stays zero and,
            when neither ``lengths`` nor ``mask`` is given, its positions are masked.
        causal: every layer attends causally (query i sees steps 0..i).
        pooling: ``attention``, ``mean``, ``max`` or an ``nn.Module``.
        pooling_options: options of :class:`~attnmtl.attention.AttentionPooling`
            (``num_queries``, ``hidden_dim``, ``selection``...), with ``pooling='attention'``.
    """

    def __init__(
        self,
        input_dim: int | None = None,
        dim: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        ff_dim: int | None = None,
        dropout: float = 0.1,
        max_len: int = 512,
        positional: str = "sinusoidal",
        vocab_size: int | None = None,
        padding_idx: int | None = None,
        causal: bool = False,
        pooling: str | nn.Module = "attention",
        pooling_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if (input_dim is None) == (vocab_size is None):
            raise ValueError(
                f"input_dim={input_dim!r}, vocab_size={vocab_size!r}; give exactly one of them"
            )
        if num_layers < 1 or dim < 1:
            raise ValueError(f"dim={dim!r}, num_layers={num_layers!r}; expected sizes >= 1")
        self.embed: nn.Module
        if vocab_size is not None:
            if vocab_size < 1:
                raise ValueError(f"vocab_size={vocab_size!r}; expected >= 1")
            self.embed = nn.Embedding(vocab_size, dim, padding_idx=padding_idx)
        else:
            assert input_dim is not None
            if input_dim < 1:
                raise ValueError(f"input_dim={input_dim!r}; expected >= 1")
            self.embed = nn.Linear(input_dim, dim)
        self.tokens = vocab_size is not None
        self.padding_idx = padding_idx if self.tokens else None
        self.input_dim, self.dim, self.causal = input_dim, dim, causal
        self.position = PositionalEncoding(dim, max_len, positional)
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(dim, num_heads, ff_dim, dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.pool = make_pooling(pooling, dim, pooling_options)
        self.out_dim = pooled_dim(self.pool, dim)

    def forward(
        self,
        x: Tensor,
        lengths: Tensor | None = None,
        mask: Tensor | None = None,
        return_layer_weights: bool = False,
    ) -> EncoderOutput:
        """Encode token ids (B, T) or features (B, T, F); ``lengths`` or ``mask`` mark real steps.

        With ``return_layer_weights`` every layer takes the reference path and its weights
        (B, H, T, T) are returned in ``layer_attention``.
        """
        expected = 2 if self.tokens else 3
        if x.dim() != expected or (not self.tokens and x.shape[-1] != self.input_dim):
            raise ValueError(
                f"input {tuple(x.shape)}; expected "
                + ("token ids (B, T)" if self.tokens else f"(B, T, {self.input_dim})")
            )
        mask = resolve_mask(lengths, mask, x.shape[1])
        if mask is None and self.padding_idx is not None:
            mask = x != self.padding_idx  # (B, T) token input: padding tokens are masked
        h = self.drop(self.position(self.embed(x)))  # (B, T, D)
        layer_weights: list[Tensor] = []
        for layer in self.layers:
            h, w = layer(h, mask, self.causal, return_layer_weights)
            if w is not None:
                layer_weights.append(w)
        h = self.norm(h)
        pooled, weights = apply_pooling(self.pool, h, mask)
        return EncoderOutput(
            pooled, h, mask, weights, layer_weights if return_layer_weights else None
        )
