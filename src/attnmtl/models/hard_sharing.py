"""Hard parameter sharing: one shared encoder and one shared pooling, one head per task.

Axes: B batch, T time (or positions), D features, K tasks.

The classic multi-task baseline (Caruana, "Multitask Learning", Machine Learning, 1997): every
hidden layer is shared and only the output layers belong to a task. Here even the pooling is
shared, so every task reads the same pooled vector; that makes this the ablation of
:mod:`attnmtl.models.attention_mtl` that removes per-task attention and shows what it adds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from attnmtl.core.batch import Inputs
from attnmtl.core.output import MultiTaskOutput
from attnmtl.core.tasks import Task
from attnmtl.models.base import MultiTaskModel, make_head
from attnmtl.models.encoder import build_encoder
from attnmtl.models.registry import register_model

SHARED_POOLINGS = ("mean", "max", "attention")


def check_encoder_options(options: Mapping[str, Any], reserved: Sequence[str]) -> dict[str, Any]:
    """``options`` as a dict; ValueError if it sets a key the model sets itself."""
    clash = sorted(set(options) & set(reserved))
    if clash:
        raise ValueError(
            f"encoder_options sets {clash}; give these as the model's own arguments "
            "or leave them out (the model sets them)"
        )
    return dict(options)


@register_model("hard_sharing")
class HardSharing(MultiTaskModel):
    """A shared encoder with one pooling for all tasks, and one head per task.

    Args:
        tasks: the tasks (injected from the data set).
        input_shape: one sample's input shape (injected).
        layout: ``sequence``, ``image`` or ``table`` (injected).
        encoder: a registered encoder name (``rnn``, ``transformer``, ``cnn``, ``mlp``) or your
            own ``nn.Module`` (see :func:`~attnmtl.models.build_encoder`).
        pooling: ``mean``, ``max`` or ``attention``: the one pooling every task reads (a
            named encoder's; an encoder module's pooled output is the mean of its steps).
        encoder_options: keyword arguments of the encoder (``hidden_dim``, ``channels``...),
            without ``pooling`` / ``pooling_options``.
        pooling_options: options of the attention pooling (with ``pooling='attention'``).
        head_hidden_dim: hidden width of each task's MLP head; None = one Linear layer.
        dropout: dropout on the pooled features and inside MLP heads.
        encoder_dim: the per-step width of an encoder module that does not declare it.

    With attention pooling, ``attention[task]`` holds the shared pooling weights, the same
    tensor for every task (no task has attention of its own); otherwise it is empty.
    ``features`` is the pooled vector (B, D) that every head reads.
    """

    splits_features = True

    def __init__(
        self,
        tasks: Sequence[Task],
        input_shape: tuple[int, ...],
        layout: str = "sequence",
        encoder: str | nn.Module = "rnn",
        pooling: str = "mean",
        encoder_options: Mapping[str, Any] | None = None,
        pooling_options: Mapping[str, Any] | None = None,
        head_hidden_dim: int | None = None,
        dropout: float = 0.0,
        encoder_dim: int | None = None,
    ) -> None:
        super().__init__(tasks)
        if pooling not in SHARED_POOLINGS:
            raise ValueError(f"pooling={pooling!r}; expected one of: {', '.join(SHARED_POOLINGS)}")
        options = check_encoder_options(encoder_options or {}, ("pooling", "pooling_options"))
        if isinstance(encoder, nn.Module):
            if pooling != "mean" or pooling_options:
                raise ValueError(
                    "pooling and pooling_options configure a named encoder; an encoder module "
                    "is pooled by the mean of its per-step features (or its own pooled output)"
                )
            self.encoder = build_encoder(encoder, tuple(input_shape), layout, encoder_dim)
        else:
            self.encoder = build_encoder(
                encoder,
                tuple(input_shape),
                layout,
                encoder_dim,
                pooling=pooling,
                pooling_options=pooling_options,
                **options,
            )
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict(
            {
                name: make_head(self.encoder.out_dim, task.out_dim, head_hidden_dim, dropout)
                for name, task in self.tasks.items()
            }
        )

    def task_modules(self, task: str) -> list[nn.Module]:
        return [self.heads[task]]

    def forward(self, inputs: Inputs, lengths: Tensor | None = None) -> MultiTaskOutput:
        """Every task's predictions from the shared pooled vector (B, D), which is ``features``."""
        enc = self.encoder(inputs, lengths)
        shared = enc.pooled  # (B, D)
        branches = self.branch(self.dropout(shared))
        preds = {name: self.heads[name](branches[name]) for name in self.tasks}  # (B, out) each
        attention = {} if enc.attention is None else dict.fromkeys(self.tasks, enc.attention)
        return MultiTaskOutput(preds, attention, shared)
