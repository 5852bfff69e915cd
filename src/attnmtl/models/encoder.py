"""A shared encoder built by name, reading any data layout.

Axes: B batch, T time, F features, C channels, H height, W width, S positions.

``build_encoder("rnn" | "transformer" | "cnn", input_shape, layout, **options)`` wraps the
foundation's encoders so that a multi-task model can take its inputs as a data set stores them:

==========  ======================================  =====================================
layout      rnn / transformer read                  cnn reads
==========  ======================================  =====================================
sequence    (B, T, F) as is                         (B, F, T): features become channels
image       (B, W, C·H): columns become steps       (B, C, H, W) as is (2-D convolutions)
table       (B, F, 1): features become steps        (B, 1, F)
==========  ======================================  =====================================

``mlp`` reads any layout flattened to (B, F) and returns a one-step sequence (B, 1, D) (so a
model's ``pooling`` choice is accepted and has nothing to pool).
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn

from attnmtl.core.batch import Inputs
from attnmtl.core.registry import check_keywords
from attnmtl.encoders import (
    ConvEncoder,
    EncoderOutput,
    MLPEncoder,
    RNNEncoder,
    TransformerEncoder,
)

ENCODER_KINDS = ("rnn", "transformer", "cnn", "mlp")


class SharedEncoder(nn.Module):
    """One of the foundation's encoders behind a layout adapter.

    Args:
        kind: ``rnn`` (:class:`~attnmtl.encoders.RNNEncoder`), ``transformer``
            (:class:`~attnmtl.encoders.TransformerEncoder`), ``cnn``
            (:class:`~attnmtl.encoders.ConvEncoder`) or ``mlp``
            (:class:`~attnmtl.encoders.MLPEncoder`).
        input_shape: one sample's input shape, as the data set stores it.
        layout: ``sequence``, ``image`` or ``table``.
        options: keyword arguments of the encoder (its input size is derived here).

    Attributes:
        dim: feature size of the per-step ``sequence`` output (what per-task attention reads).
        out_dim: size of the encoder's own pooled vector.
    """

    def __init__(
        self, kind: str, input_shape: tuple[int, ...], layout: str, **options: Any
    ) -> None:
        super().__init__()
        if kind not in ENCODER_KINDS:
            raise ValueError(f"encoder={kind!r}; expected one of: {', '.join(ENCODER_KINDS)}")
        tokens = options.get("vocab_size") is not None  # (B, T) token ids, embedded
        if tokens and (kind != "transformer" or layout != "sequence"):
            raise ValueError(
                f"encoder_options.vocab_size (token ids) with encoder={kind!r}, "
                f"layout={layout!r}; expected encoder 'transformer' on layout 'sequence'"
            )
        expected = {"sequence": 1 if tokens else 2, "image": 3, "table": 1}
        if layout not in expected:
            raise ValueError(f"layout={layout!r}; expected one of: {', '.join(expected)}")
        if len(input_shape) != expected[layout]:
            raise ValueError(f"input shape {input_shape} does not fit layout {layout!r}")
        self.kind, self.layout = kind, layout
        self.encoder: nn.Module
        if kind == "mlp":
            # One output step: any pooling of it is the identity, so pooling options are moot.
            options.pop("pooling", None)
            options.pop("pooling_options", None)
            check_keywords(MLPEncoder, options, "encoder 'mlp'")
            self.encoder = MLPEncoder(math.prod(input_shape), **options)
        elif kind == "cnn":
            in_channels = {"sequence": input_shape[-1], "image": input_shape[0], "table": 1}
            options.setdefault("dims", 2 if layout == "image" else 1)
            check_keywords(ConvEncoder, options, "encoder 'cnn'")
            self.encoder = ConvEncoder(in_channels=in_channels[layout], **options)
        else:
            steps_dim = {
                "sequence": input_shape[-1],
                "image": math.prod(input_shape[:2]),
                "table": 1,
            }[layout]
            cls = RNNEncoder if kind == "rnn" else TransformerEncoder
            check_keywords(cls, options, f"encoder {kind!r}")
            self.encoder = cls(**options) if tokens else cls(input_dim=steps_dim, **options)
        self.dim = int(self.encoder.dim)
        self.out_dim = int(self.encoder.out_dim)

    def adapt(self, x: Tensor) -> Tensor:
        """``x`` as stored → what the wrapped encoder reads (see the module table)."""
        if self.kind == "mlp":
            return x
        if self.kind == "cnn":
            if self.layout == "sequence":
                return x.transpose(1, 2)  # (B, F, T)
            return x.unsqueeze(1) if self.layout == "table" else x
        if self.layout == "image":
            return x.flatten(1, 2).transpose(1, 2)  # (B, C, H, W) -> (B, W, C·H)
        return x.unsqueeze(-1) if self.layout == "table" else x

    def forward(self, inputs: Inputs, lengths: Tensor | None = None) -> EncoderOutput:
        """Encode a batch; ``lengths`` (B,) marks right-padded sequences (rnn, transformer)."""
        if not isinstance(inputs, Tensor):
            raise ValueError(
                f"encoder {self.kind!r} takes one input tensor, got arrays {sorted(inputs)}"
            )
        x = self.adapt(inputs)
        if self.kind in ("cnn", "mlp"):
            if lengths is not None:
                raise ValueError(f"the {self.kind} encoder does not take lengths")
            out: EncoderOutput = self.encoder(x)
        else:
            out = self.encoder(x, lengths)
        return out


def build_encoder(
    kind: str, input_shape: tuple[int, ...], layout: str, **options: Any
) -> SharedEncoder:
    """A :class:`SharedEncoder` (see there)."""
    return SharedEncoder(kind, input_shape, layout, **options)
