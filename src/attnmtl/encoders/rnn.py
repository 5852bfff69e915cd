"""Recurrent encoders (RNN, GRU, LSTM) with attention pooling over their hidden states.

Axes: B batch, T time, F input features, D = hidden size × directions.

This generalises the seed note's ``AttnRNN``: the recurrent net runs over the (variable-length)
sequence, a pooling module turns its per-step outputs into one vector. Variable lengths are
packed (``pack_padded_sequence``) so that padding never enters the recurrence — a backward
direction starts at each sample's real last step — and padded steps get zero attention weight.
The initial hidden state is the recurrent module's default (zeros on the input's device).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attnmtl.encoders.output import EncoderOutput
from attnmtl.encoders.pooling import (
    apply_pooling,
    lengths_to_mask,
    make_pooling,
    pooled_dim,
    resolve_mask,
)

CELLS: dict[str, Callable[..., nn.RNNBase]] = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


class RNNEncoder(nn.Module):
    """A recurrent encoder with pooling (attention by default).

    Args:
        input_dim: features F per step.
        hidden_dim: hidden size per direction.
        num_layers: stacked recurrent layers.
        cell: ``rnn`` (tanh), ``gru`` or ``lstm``.
        bidirectional: run a backward direction too (D = 2 × hidden_dim).
        dropout: dropout between recurrent layers (needs num_layers > 1 to act).
        pooling: ``attention``, ``mean``, ``max``, ``last`` (the final hidden state of the last
            layer, both directions), or an ``nn.Module`` to share (e.g. one
            :class:`~attnmtl.attention.AttentionPooling` for several encoders, as the seed does).
        pooling_options: options of :class:`~attnmtl.attention.AttentionPooling`
            (``num_queries``, ``hidden_dim``, ``selection``...), with ``pooling='attention'``.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int = 64,
        num_layers: int = 1,
        cell: str = "gru",
        bidirectional: bool = False,
        dropout: float = 0.0,
        pooling: str | nn.Module = "attention",
        pooling_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell={cell!r}; expected one of: {', '.join(CELLS)}")
        if min(input_dim, hidden_dim, num_layers) < 1:
            raise ValueError(
                f"input_dim={input_dim!r}, hidden_dim={hidden_dim!r}, num_layers={num_layers!r}; "
                "expected sizes >= 1"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout!r}; expected a probability in [0, 1)")
        self.input_dim = input_dim
        self.dim = hidden_dim * (2 if bidirectional else 1)
        self.rnn = CELLS[cell](
            input_dim,
            hidden_dim,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.pool: nn.Module | None = None
        if pooling != "last":
            self.pool = make_pooling(pooling, self.dim, pooling_options)
        elif pooling_options:
            raise ValueError(f"pooling options {sorted(pooling_options)} need pooling='attention'")
        self.out_dim = self.dim if self.pool is None else pooled_dim(self.pool, self.dim)

    def forward(
        self, x: Tensor, lengths: Tensor | None = None, mask: Tensor | None = None
    ) -> EncoderOutput:
        """Encode ``x`` (B, T, F); ``lengths`` (B,) or a right-padded ``mask`` (B, T) mark steps.

        Padded steps get zero outputs and zero attention weight.
        """
        if x.dim() != 3 or x.shape[-1] != self.input_dim:
            raise ValueError(f"input {tuple(x.shape)}; expected (B, T, {self.input_dim})")
        batch, steps = x.shape[0], x.shape[1]
        if mask is not None and lengths is None:
            lengths = mask.sum(1)
            if not torch.equal(mask, lengths_to_mask(lengths, steps)):
                raise ValueError("an RNN mask must be right-padded (True steps first)")
            mask = None
        mask = resolve_mask(lengths, mask, steps)
        if lengths is None:
            seq, state = self.rnn(x)  # (B, T, D)
        else:
            shortest, longest = (int(v) for v in torch.aminmax(lengths))
            if shortest < 1 or longest > steps:
                raise ValueError(f"lengths must lie in [1, {steps}]")
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            seq, state = self.rnn(packed)
            seq, _ = pad_packed_sequence(seq, batch_first=True, total_length=steps)
        if self.pool is None:
            h_n = state[0] if isinstance(state, tuple) else state  # (layers × dirs, B, H)
            dirs = self.dim // self.rnn.hidden_size
            pooled = h_n[-dirs:].transpose(0, 1).reshape(batch, self.dim)  # (B, D)
            return EncoderOutput(pooled, seq, mask)
        pooled, weights = apply_pooling(self.pool, seq, mask)
        return EncoderOutput(pooled, seq, mask, weights)
