"""Sequence and image encoders built on :mod:`attnmtl.attention`.

Every encoder returns an :class:`EncoderOutput`: pooled features, per-step features, the mask
and the attention it computed. :data:`ENCODERS` finds them by name for a model
(``@register_encoder(name)`` adds one; see :mod:`attnmtl.encoders.registry`).
"""

from attnmtl.encoders.cnn import ConvEncoder
from attnmtl.encoders.hf import HFEncoder
from attnmtl.encoders.mlp import MLPEncoder
from attnmtl.encoders.output import EncoderOutput
from attnmtl.encoders.pooling import MaskedPooling, lengths_to_mask, make_pooling
from attnmtl.encoders.positional import PositionalEncoding, sinusoidal_table
from attnmtl.encoders.registry import (
    ENCODERS,
    Encoding,
    list_encoders,
    register_encoder,
)
from attnmtl.encoders.revin import RevIN
from attnmtl.encoders.rnn import RNNEncoder
from attnmtl.encoders.transformer import TransformerEncoder, TransformerEncoderLayer

__all__ = [
    "ENCODERS",
    "ConvEncoder",
    "EncoderOutput",
    "Encoding",
    "HFEncoder",
    "MLPEncoder",
    "MaskedPooling",
    "PositionalEncoding",
    "RNNEncoder",
    "RevIN",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "lengths_to_mask",
    "list_encoders",
    "make_pooling",
    "register_encoder",
    "sinusoidal_table",
]
