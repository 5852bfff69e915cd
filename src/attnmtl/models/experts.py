"""What the mixture-of-experts models share: expert encoders read from the input, the vector
a gate reads, and the towers.

Axes: B batch, T time, F features, C channels, E experts, D expert output size.

Every gated model (``mmoe``, ``omoe``, ``cgc``, ``ple``, ``dselect_k``, ``adatt``) sets
``gated = True`` and returns each task's final gate over the experts it mixes as
``attention[task]`` (B, E_task), rows summing to one, so the report draws the gates of any of
them without knowing its class.

The gate reads the raw input. The papers' input is one flat vector; here ``gate_input`` says
how a sample becomes one:

========  ============================  ==================================
layout    ``mean``                      ``flatten``
========  ============================  ==================================
sequence  mean over real steps (B, F)   all steps (B, T·F), padding zeroed
image     mean over positions (B, C)    all pixels (B, C·H·W)
table     the row as is (B, F)          the row as is (B, F)
========  ============================  ==================================

Token ids (B, T) (``encoder: hf``, or ``transformer`` with ``vocab_size``) carry no features to
average: there the gates read the mean, over the real tokens, of a learned token embedding of
width :data:`TOKEN_GATE_WIDTH` (a bag of words, shared by every gate).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from attnmtl.core.batch import Inputs
from attnmtl.core.tasks import Task
from attnmtl.encoders import lengths_to_mask
from attnmtl.models.base import MultiTaskModel, make_head
from attnmtl.models.encoder import SharedEncoder, build_encoder
from attnmtl.models.hard_sharing import SHARED_POOLINGS, check_encoder_options

GATE_INPUTS = ("mean", "flatten")
TOKEN_GATE_WIDTH = 32


def gate_dim(input_shape: tuple[int, ...], layout: str, gate_input: str) -> int:
    """Size of the vector a gate reads (see the module table)."""
    if gate_input == "flatten" or layout == "table":
        return math.prod(input_shape)
    return input_shape[0] if layout == "image" else input_shape[-1]


def check_count(name: str, value: int, least: int = 1) -> int:
    """``value`` as an int when it is an integer >= ``least``; ValueError naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name}={value!r}; expected an integer >= {least}")
    return value


class ExpertModel(MultiTaskModel):
    """Base of the mixture-of-experts models: builds expert encoders and the towers, and reads
    the gates' input.

    Args:
        tasks: the tasks (injected from the data set).
        input_shape: one sample's input shape (injected).
        layout: ``sequence``, ``image`` or ``table`` (injected).
        encoder: each expert's kind, ``rnn``, ``transformer``, ``cnn`` or ``mlp``.
        encoder_options: keyword arguments of every expert's encoder, without pooling.
        pooling: how each expert pools its steps into its output: ``mean``, ``max`` or
            ``attention`` (each expert then has its own scorer).
        pooling_options: options of the attention pooling (with ``pooling='attention'``).
        gate_input: ``mean`` or ``flatten`` (see the module table).
        head_hidden_dim: hidden width of each task's tower; None = one Linear layer.
        dropout: dropout on each task's mixture and inside MLP towers.

    Subclasses build their experts (:meth:`make_experts`) and gates, then call
    :meth:`build_towers`.
    """

    gated = True  # attention[task] is the task's gate over the experts

    def __init__(
        self,
        tasks: Sequence[Task],
        input_shape: tuple[int, ...],
        layout: str = "sequence",
        encoder: str = "rnn",
        encoder_options: Mapping[str, Any] | None = None,
        pooling: str = "mean",
        pooling_options: Mapping[str, Any] | None = None,
        gate_input: str = "mean",
        head_hidden_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(tasks)
        if pooling not in SHARED_POOLINGS:
            raise ValueError(f"pooling={pooling!r}; expected one of: {', '.join(SHARED_POOLINGS)}")
        if gate_input not in GATE_INPUTS:
            raise ValueError(
                f"gate_input={gate_input!r}; expected one of: {', '.join(GATE_INPUTS)}"
            )
        self.expert_spec = (
            encoder,
            pooling,
            pooling_options,
            check_encoder_options(encoder_options or {}, ("pooling", "pooling_options")),
        )
        self.layout, self.gate_input, self.input_shape = layout, gate_input, tuple(input_shape)
        self.tokens = layout == "sequence" and len(self.input_shape) == 1  # (B, T) token ids
        self.gate_width = (
            TOKEN_GATE_WIDTH if self.tokens else gate_dim(self.input_shape, layout, gate_input)
        )
        self.token_embedding: nn.Embedding | None = None  # the gates' bag of words (tokens)
        self.head_hidden_dim, self.dropout_rate = head_hidden_dim, dropout
        self.dropout = nn.Dropout(dropout)
        self.expert_dim = 0  # known once the first experts are built

    def make_experts(self, count: int) -> nn.ModuleList:
        """``count`` fresh expert encoders of the model's kind (each pooled to (B, D))."""
        encoder, pooling, pooling_options, options = self.expert_spec
        experts = nn.ModuleList(
            build_encoder(
                encoder,
                self.input_shape,
                self.layout,
                pooling=pooling,
                pooling_options=pooling_options,
                **options,
            )
            for _ in range(count)
        )
        first = experts[0]
        assert isinstance(first, SharedEncoder)
        self.expert_dim = first.out_dim
        if self.tokens and self.token_embedding is None:
            vocab = options.get("vocab_size") or getattr(first.encoder, "vocab_size", None)
            if not isinstance(vocab, int) or vocab < 1:
                raise ValueError(
                    f"{type(self).__name__.lower()}: token ids in, but encoder {encoder!r} "
                    "declares no vocabulary for the gates' token embedding"
                )
            self.token_embedding = nn.Embedding(vocab, TOKEN_GATE_WIDTH)
        return experts

    def build_towers(self, dim: int | None = None) -> None:
        """One tower (head) per task on inputs of ``dim`` (the experts' output size)."""
        width = self.expert_dim if dim is None else dim
        self.towers = nn.ModuleDict(
            {
                name: make_head(width, task.out_dim, self.head_hidden_dim, self.dropout_rate)
                for name, task in self.tasks.items()
            }
        )

    @staticmethod
    def run_experts(experts: nn.ModuleList, x: Tensor, lengths: Tensor | None) -> Tensor:
        """The pooled outputs of ``experts`` on the input, stacked (B, E, D)."""
        return torch.stack([e(x, lengths).pooled for e in experts], 1)

    def check_input(self, inputs: Inputs) -> Tensor:
        """The one input tensor; ValueError for named arrays."""
        if not isinstance(inputs, Tensor):
            raise ValueError(
                f"{type(self).__name__.lower()} takes one input tensor, got arrays {sorted(inputs)}"
            )
        return inputs

    def gate_features(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The vector each gate reads, (B, F) — see the module table."""
        if self.token_embedding is not None:
            if x.dim() != 2 or x.is_floating_point():
                raise ValueError(f"input {tuple(x.shape)} {x.dtype}; expected token ids (B, T)")
            bag = self.token_embedding(x)  # (B, T, W)
            if lengths is None:
                return bag.mean(1)
            real = lengths_to_mask(lengths, x.shape[1]).unsqueeze(-1).to(bag.dtype)  # (B, T, 1)
            return (bag * real).sum(1) / real.sum(1).clamp(min=1)  # (B, W)
        if self.gate_input == "flatten" or self.layout != "sequence":
            fits = tuple(x.shape[1:]) == self.input_shape
        else:  # steps may differ from batch to batch
            fits = x.dim() == 3 and x.shape[-1] == self.input_shape[-1]
        if not fits:
            raise ValueError(
                f"input {tuple(x.shape)} does not fit the gates' input shape {self.input_shape}"
            )
        if self.layout == "table":
            return x
        if self.layout == "image":
            return x.flatten(1) if self.gate_input == "flatten" else x.mean((2, 3))  # (B, C)
        if lengths is not None:
            x = x * lengths_to_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)  # (B, T, F)
        if self.gate_input == "flatten":
            return x.flatten(1)  # (B, T·F)
        if lengths is None:
            return x.mean(1)  # (B, F)
        return x.sum(1) / lengths.clamp(min=1).unsqueeze(-1).to(x.dtype)  # (B, F)
