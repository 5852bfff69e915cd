"""Encoders by name, each reading a data set's stored layout.

Axes: B batch, T time, F features, C channels, H height, W width.

``@register_encoder(name)`` registers a *layout builder*: a function of one sample's stored input
shape, the data's layout (``sequence``, ``image``, ``table``) and the encoder's own options,
returning an :class:`Encoding` — the encoder module, how stored inputs become what it reads,
and whether it takes sequence lengths. The built-in ones:

==========  ======================================  =====================================
layout      rnn / transformer read                  cnn reads
==========  ======================================  =====================================
sequence    (B, T, F) as is                         (B, F, T): features become channels
image       (B, W, C·H): columns become steps       (B, C, H, W) as is (2-D convolutions)
table       (B, F, 1): features become steps        (B, 1, F)
==========  ======================================  =====================================

``hf`` reads token ids (B, T) of a ``sequence`` data set tokenized for its model.
``mlp`` reads any layout flattened to (B, F) and returns a one-step sequence (B, 1, D) (so a
model's ``pooling`` choice is accepted and has nothing to pool). A model takes an encoder by
name through :func:`attnmtl.models.build_encoder`, which also accepts a module.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from attnmtl.core.registry import Registry, check_keywords, describe_options
from attnmtl.encoders.cnn import ConvEncoder
from attnmtl.encoders.hf import HFEncoder
from attnmtl.encoders.mlp import MLPEncoder
from attnmtl.encoders.rnn import RNNEncoder
from attnmtl.encoders.transformer import TransformerEncoder

LAYOUTS = ("sequence", "image", "table")


@dataclass(frozen=True)
class Encoding:
    """An encoder built for a layout.

    Attributes:
        module: the encoder (``dim``: per-step width; ``out_dim``: pooled width), returning an
            :class:`~attnmtl.encoders.EncoderOutput`.
        adapt: stored inputs → what ``module`` reads.
        takes_lengths: whether ``module`` takes ``lengths`` (B,) of right-padded sequences.
    """

    module: nn.Module
    adapt: Callable[[Tensor], Tensor]
    takes_lengths: bool


EncoderBuilder = Callable[..., Encoding]
ENCODERS: Registry[EncoderBuilder] = Registry("encoder")
register_encoder = ENCODERS.register


def _identity(x: Tensor) -> Tensor:
    return x


def _as_steps(layout: str, x: Tensor) -> Tensor:
    """Stored inputs → (B, T, F) for a sequence encoder (see the module table)."""
    if layout == "image":
        return x.flatten(1, 2).transpose(1, 2)  # (B, C, H, W) -> (B, W, C·H)
    return x.unsqueeze(-1) if layout == "table" else x


def _as_channels(layout: str, x: Tensor) -> Tensor:
    """Stored inputs → (B, C, *S) for a CNN (see the module table)."""
    if layout == "sequence":
        return x.transpose(1, 2)  # (B, F, T)
    return x.unsqueeze(1) if layout == "table" else x


def _sequence_encoder(
    cls: type[nn.Module], kind: str, input_shape: tuple[int, ...], layout: str, **options: Any
) -> Encoding:
    steps_dim = {"sequence": input_shape[-1], "image": math.prod(input_shape[:2]), "table": 1}
    check_keywords(cls, options, f"encoder {kind!r}")
    tokens = options.get("vocab_size") is not None  # token ids are embedded: no input_dim
    module = cls(**options) if tokens else cls(input_dim=steps_dim[layout], **options)
    return Encoding(module, functools.partial(_as_steps, layout), True)


@register_encoder("rnn")
def rnn_encoding(input_shape: tuple[int, ...], layout: str, **options: Any) -> Encoding:
    """:class:`~attnmtl.encoders.RNNEncoder` over the stored layout's steps."""
    return _sequence_encoder(RNNEncoder, "rnn", input_shape, layout, **options)


@register_encoder("transformer")
def transformer_encoding(input_shape: tuple[int, ...], layout: str, **options: Any) -> Encoding:
    """:class:`~attnmtl.encoders.TransformerEncoder` over the steps (or token ids)."""
    return _sequence_encoder(TransformerEncoder, "transformer", input_shape, layout, **options)


@register_encoder("cnn")
def cnn_encoding(input_shape: tuple[int, ...], layout: str, **options: Any) -> Encoding:
    """:class:`~attnmtl.encoders.ConvEncoder`: 2-D on images, 1-D otherwise."""
    in_channels = {"sequence": input_shape[-1], "image": input_shape[0], "table": 1}
    options.setdefault("dims", 2 if layout == "image" else 1)
    check_keywords(ConvEncoder, options, "encoder 'cnn'")
    module = ConvEncoder(in_channels=in_channels[layout], **options)
    return Encoding(module, functools.partial(_as_channels, layout), False)


@register_encoder("mlp")
def mlp_encoding(input_shape: tuple[int, ...], layout: str, **options: Any) -> Encoding:
    """:class:`~attnmtl.encoders.MLPEncoder` on the flattened input (one output step)."""
    # One output step: any pooling of it is the identity, so pooling options are moot.
    options.pop("pooling", None)
    options.pop("pooling_options", None)
    check_keywords(MLPEncoder, options, "encoder 'mlp'")
    return Encoding(MLPEncoder(math.prod(input_shape), **options), _identity, False)


@register_encoder("hf")
def hf_encoding(input_shape: tuple[int, ...], layout: str, **options: Any) -> Encoding:
    """:class:`~attnmtl.encoders.HFEncoder`: a pretrained transformer on token ids (B, T)."""
    if layout != "sequence" or len(input_shape) != 1:
        raise ValueError(
            f"encoder 'hf' reads token ids (B, T); the data hold {layout!r} inputs of shape "
            f"{tuple(input_shape)} per sample (tokenize text first, e.g. data: textmt)"
        )
    check_keywords(HFEncoder, options, "encoder 'hf'")
    return Encoding(HFEncoder(**options), _identity, True)


# Encoders that read token ids (B, T): one sample is a 1-D row of ids, whatever its options.
TOKEN_ENCODERS = frozenset({"hf"})


def list_encoders() -> list[str]:
    """Names of the registered encoders."""
    return ENCODERS.names()


# The module each built-in layout builder makes: its keywords are the encoder's options.
ENCODER_MODULES: dict[str, type[nn.Module]] = {
    "rnn": RNNEncoder,
    "transformer": TransformerEncoder,
    "cnn": ConvEncoder,
    "mlp": MLPEncoder,
    "hf": HFEncoder,
}
# Arguments a layout builder derives from the data, not options a config gives.
DERIVED = ("input_dim", "in_channels", "input_shape", "layout")


def encoder_options(name: str) -> list[tuple[str, str, str, str]]:
    """(option, type, default, description) of a registered encoder, plus ``revin``, which
    every named encoder takes on sequences (:class:`attnmtl.models.SharedEncoder`)."""
    factory = ENCODER_MODULES.get(name) or ENCODERS.get(name)
    rows = describe_options(factory, DERIVED)
    revin = "each window normalised per feature, learned affine map (RevIN; sequences)"
    return [*rows, ("revin", "bool", "False", revin)]
