"""Shared encoder + per-task attention pooling + per-task heads (the default model).

Axes: B batch, T time (or positions), D features, K tasks.

Each task reads the shared encoder's per-step features through its own attention pooling, so
tasks that care about different parts of the input ("what" and "where") attend to different
steps of one shared representation — the seed note's per-task attention over a shared encoder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from attnmtl.attention import AttentionPooling
from attnmtl.core.batch import Inputs
from attnmtl.core.output import MultiTaskOutput
from attnmtl.core.registry import check_keywords
from attnmtl.core.tasks import Task
from attnmtl.models.base import MultiTaskModel, make_head
from attnmtl.models.encoder import build_encoder
from attnmtl.models.registry import register_model


def task_readouts(
    tasks: Mapping[str, Task],
    dim: int,
    attention_options: Mapping[str, Any] | None,
    head_hidden_dim: int | None,
    dropout: float,
) -> tuple[nn.ModuleDict, nn.ModuleDict]:
    """One attention pooling over a (B, T, ``dim``) sequence and one head per task."""
    options = dict(attention_options or {})
    check_keywords(AttentionPooling, options, "attention_options")
    pools = {name: AttentionPooling(dim, **options) for name in tasks}
    heads = {
        name: make_head(pools[name].out_dim, task.out_dim, head_hidden_dim, dropout)
        for name, task in tasks.items()
    }
    return nn.ModuleDict(pools), nn.ModuleDict(heads)


def read_tasks(
    attention: nn.ModuleDict,
    heads: nn.ModuleDict,
    dropout: nn.Module,
    sequences: Mapping[str, Tensor],
    mask: Tensor | None,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Each task's predictions (B, out) and pooling weights (B, T) from its sequence."""
    preds, weights = {}, {}
    for name, pool in attention.items():
        pooled, weights[name] = pool(sequences[name], mask, return_weights=True)
        preds[name] = heads[name](dropout(pooled.flatten(1)))  # (B, out)
    return preds, weights


@register_model("attention_mtl")
class AttentionMTL(MultiTaskModel):
    """A shared encoder, one attention pooling per task and one head per task.

    Args:
        tasks: the tasks (injected from the data set).
        input_shape: one sample's input shape (injected).
        layout: ``sequence``, ``image`` or ``table`` (injected).
        encoder: a registered encoder name (``rnn``, ``transformer``, ``cnn``, ``mlp``) or
            your own ``nn.Module`` (see :func:`~attnmtl.models.build_encoder`: it may return
            per-step features (B, T, D), as ``nn.GRU(..., batch_first=True)`` does).
        encoder_options: keyword arguments of a named encoder (``hidden_dim``, ``cell``...).
        attention_options: keyword arguments of each task's
            :class:`~attnmtl.attention.AttentionPooling` (``hidden_dim``, ``selection``...).
        head_hidden_dim: hidden width of each task's MLP head; None = one Linear layer.
        dropout: dropout on the pooled features and inside MLP heads.
        encoder_dim: the per-step width of an encoder module that does not declare it
            (``dim``); read off one forward pass otherwise.
    """

    splits_features = True

    def __init__(
        self,
        tasks: Sequence[Task],
        input_shape: tuple[int, ...],
        layout: str = "sequence",
        encoder: str | nn.Module = "rnn",
        encoder_options: Mapping[str, Any] | None = None,
        attention_options: Mapping[str, Any] | None = None,
        head_hidden_dim: int | None = None,
        dropout: float = 0.0,
        encoder_dim: int | None = None,
    ) -> None:
        super().__init__(tasks)
        options = dict(encoder_options or {})
        if not isinstance(encoder, nn.Module):  # the per-task poolings do the pooling
            options = {"pooling": "mean", **options}
        self.encoder = build_encoder(encoder, tuple(input_shape), layout, encoder_dim, **options)
        self.attention, self.heads = task_readouts(
            self.tasks, self.encoder.dim, attention_options, head_hidden_dim, dropout
        )
        self.dropout = nn.Dropout(dropout)

    def task_modules(self, task: str) -> list[nn.Module]:
        return [self.attention[task], self.heads[task]]

    def forward(self, inputs: Inputs, lengths: Tensor | None = None) -> MultiTaskOutput:
        """Every task's predictions, attention (B, T) and the shared sequence (B, T, D)."""
        enc = self.encoder(inputs, lengths)
        sequences = self.branch(enc.sequence)
        preds, attention = read_tasks(self.attention, self.heads, self.dropout, sequences, enc.mask)
        return MultiTaskOutput(preds, attention, enc.sequence)
