"""A model's shared encoder: one registered by name, or a module the user hands in.

Axes: B batch, T time, D features.

``build_encoder(encoder, input_shape, layout, **options)`` returns a module that reads a batch's
inputs as the data set stores them and returns an :class:`~attnmtl.encoders.EncoderOutput`,
with ``dim`` (the per-step width per-task attention reads) and ``out_dim`` (the pooled width):

- a name (``rnn``, ``transformer``, ``cnn``, ``mlp``, or any registered with
  :func:`~attnmtl.encoders.register_encoder`) gives a :class:`SharedEncoder`, which adapts the
  stored layout (see :mod:`attnmtl.encoders.registry`);
- an ``nn.Module`` gives a :class:`ModuleEncoder`: the module may return an
  :class:`~attnmtl.encoders.EncoderOutput`, per-step features (B, T, D), one vector per sample
  (B, D), or a tuple whose first element is one of these (``nn.GRU``/``nn.LSTM`` with
  ``batch_first=True``). Its width is ``encoder_dim=`` when given, else the module's ``dim``
  attribute, else read off one forward pass on a zero input at construction.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

from attnmtl.core.batch import Inputs
from attnmtl.encoders import ENCODERS, EncoderOutput, lengths_to_mask
from attnmtl.encoders.registry import LAYOUTS, TOKEN_ENCODERS
from attnmtl.encoders.revin import RevIN


def check_layout(input_shape: tuple[int, ...], layout: str, tokens: bool = False) -> None:
    """ValueError unless one sample's ``input_shape`` fits ``layout``."""
    expected = {"sequence": 1 if tokens else 2, "image": 3, "table": 1}
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}; expected one of: {', '.join(LAYOUTS)}")
    if len(input_shape) != expected[layout]:
        raise ValueError(f"input shape {input_shape} does not fit layout {layout!r}")


class SharedEncoder(nn.Module):
    """A registered encoder behind its layout adapter.

    Args:
        kind: a registered encoder name (``rnn``, ``transformer``, ``cnn``, ``mlp``...).
        input_shape: one sample's input shape, as the data set stores it.
        layout: ``sequence``, ``image`` or ``table``.
        options: keyword arguments of the encoder (its input size is derived here), and
            ``revin: true`` (sequences): each window normalised per feature by its own mean
            and std with a learned affine map before the encoder (:class:`RevIN`).

    Attributes:
        dim: feature size of the per-step ``sequence`` output (what per-task attention reads).
        out_dim: size of the encoder's own pooled vector.
    """

    def __init__(
        self, kind: str, input_shape: tuple[int, ...], layout: str, **options: Any
    ) -> None:
        super().__init__()
        if kind not in ENCODERS:
            raise ValueError(f"encoder={kind!r}; expected one of: {', '.join(ENCODERS.names())}")
        tokens = options.get("vocab_size") is not None  # (B, T) token ids, embedded
        if tokens and (kind != "transformer" or layout != "sequence"):
            raise ValueError(
                f"encoder_options.vocab_size (token ids) with encoder={kind!r}, "
                f"layout={layout!r}; expected encoder 'transformer' on layout 'sequence'"
            )
        check_layout(tuple(input_shape), layout, tokens or kind in TOKEN_ENCODERS)
        self.kind, self.layout = kind, layout
        revin = options.pop("revin", False)
        if not isinstance(revin, bool):
            raise ValueError(f"encoder_options.revin={revin!r}; expected true or false")
        if revin and (layout != "sequence" or tokens):
            raise ValueError(
                f"encoder_options.revin normalises windows of steps: layout 'sequence' of "
                f"numbers, not {'token ids' if tokens else repr(layout)}"
            )
        self.revin = RevIN(int(input_shape[-1])) if revin else None
        built = ENCODERS.get(kind)(tuple(input_shape), layout, **options)
        self.encoder: nn.Module = built.module
        self.adapt = built.adapt  # stored inputs -> what the encoder reads
        self.takes_lengths = built.takes_lengths
        self.dim = int(getattr(self.encoder, "dim"))  # noqa: B009  (nn.Module attributes)
        self.out_dim = int(getattr(self.encoder, "out_dim"))  # noqa: B009

    def forward(self, inputs: Inputs, lengths: Tensor | None = None) -> EncoderOutput:
        """Encode a batch; ``lengths`` (B,) marks right-padded sequences (rnn, transformer)."""
        if not isinstance(inputs, Tensor):
            raise ValueError(
                f"encoder {self.kind!r} takes one input tensor, got arrays {sorted(inputs)}"
            )
        x = self.adapt(inputs if self.revin is None else self.revin(inputs, lengths))
        if not self.takes_lengths:
            if lengths is not None:
                raise ValueError(f"the {self.kind} encoder does not take lengths")
            out: EncoderOutput = self.encoder(x)
        else:
            out = self.encoder(x, lengths)
        return out


class ModuleEncoder(nn.Module):
    """A user's module as a shared encoder (see the module docstring for what it may return).

    Args:
        module: the encoder; called as ``module(inputs, lengths)`` when its ``forward`` has a
            ``lengths`` parameter, else ``module(inputs)`` (and then a batch of padded
            sequences is refused: padding would enter its features).
        input_shape: one sample's input shape (for the width probe).
        dim: the per-step feature width, when the module does not say it (``dim``).
    """

    def __init__(self, module: nn.Module, input_shape: tuple[int, ...], dim: int | None = None):
        super().__init__()
        self.encoder = module
        self.takes_lengths = "lengths" in inspect.signature(module.forward).parameters
        declared = dim if dim is not None else getattr(module, "dim", None)
        if declared is None:
            declared, pooled = self._probe(tuple(input_shape))
        else:
            pooled = getattr(module, "out_dim", declared)
        self.dim, self.out_dim = int(declared), int(pooled)

    def _probe(self, input_shape: tuple[int, ...]) -> tuple[int, int]:
        """(per-step width, pooled width) of one forward pass on a zero input."""
        was_training = self.encoder.training
        self.encoder.eval()
        try:
            with torch.no_grad():
                param = next(self.encoder.parameters(), None)
                device = param.device if param is not None else None
                out = self(torch.zeros((1, *input_shape), device=device))
        except (RuntimeError, ValueError, TypeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(
                f"encoder {type(self.encoder).__name__} failed on an input of shape "
                f"{(1, *input_shape)} ({first}); give its width as encoder_dim= if it needs "
                "other inputs"
            ) from None
        finally:
            self.encoder.train(was_training)
        return out.sequence.shape[-1], out.pooled.shape[-1]

    def forward(self, inputs: Inputs, lengths: Tensor | None = None) -> EncoderOutput:
        """The module's output as an :class:`~attnmtl.encoders.EncoderOutput`."""
        if self.takes_lengths:
            raw = self.encoder(inputs, lengths=lengths)
        elif lengths is not None:
            raise ValueError(
                f"encoder {type(self.encoder).__name__} takes no lengths, but the batch holds "
                "padded sequences; give it a forward(inputs, lengths) parameter"
            )
        else:
            raw = self.encoder(inputs)
        if isinstance(raw, EncoderOutput):
            return raw
        if isinstance(raw, (tuple, list)):  # nn.GRU / nn.LSTM: (output, hidden)
            raw = raw[0]
        if not isinstance(raw, Tensor) or raw.dim() not in (2, 3):
            got = tuple(raw.shape) if isinstance(raw, Tensor) else type(raw).__name__
            raise ValueError(
                f"encoder {type(self.encoder).__name__} returned {got}; expected an "
                "EncoderOutput, (B, T, D) or (B, D)"
            )
        sequence = raw if raw.dim() == 3 else raw.unsqueeze(1)  # (B, T, D)
        mask = None if lengths is None else lengths_to_mask(lengths, sequence.shape[1])
        if mask is None:
            pooled = sequence.mean(1)
        else:
            m = mask.unsqueeze(-1).to(sequence.dtype)  # (B, T, 1)
            pooled = (sequence * m).sum(1) / m.sum(1).clamp_min(1)
        return EncoderOutput(pooled, sequence, mask)


def build_encoder(
    encoder: str | nn.Module,
    input_shape: tuple[int, ...],
    layout: str,
    encoder_dim: int | None = None,
    **options: Any,
) -> SharedEncoder | ModuleEncoder:
    """A :class:`SharedEncoder` for a registered name, a :class:`ModuleEncoder` for a module
    (which takes no ``options``; ``encoder_dim``, its width, only applies to a module)."""
    if isinstance(encoder, nn.Module):
        if options:
            raise ValueError(
                f"encoder options {sorted(options)} given with an encoder module; configure "
                "the module itself"
            )
        return ModuleEncoder(encoder, input_shape, encoder_dim)
    if encoder_dim is not None:
        raise ValueError("encoder_dim is for an encoder module; a named encoder knows its width")
    return SharedEncoder(encoder, input_shape, layout, **options)
