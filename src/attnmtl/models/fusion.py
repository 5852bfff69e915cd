"""Attention fusion of frozen source models into a target model (the seed note's "model fusion").

Axes: B batch, T time (or positions), D features, K source models.

AdapterFusion (Pfeiffer et al., "AdapterFusion: Non-Destructive Task Composition for Transfer
Learning", EACL 2021) combines frozen task adapters with attention: at each position the layer's
hidden state is the query, the adapters' outputs are the keys and values, a softmax over the
adapters weighs them, the value projection starts as the identity and the result is added to the
hidden state. Here the "adapters" are whole finished attnmtl runs: each frozen source model's
shared encoder gives per-step features (B, T, D); the base source's features are the query (as
the frozen base model's hidden state is in AdapterFusion); the fused sequence feeds one attention
pooling and one head per target task. Only the fusion projections, the poolings and the heads
train; the per-sample, per-step fusion weights are returned in ``extras["fusion"]`` (B, T, K).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from attnmtl.core.batch import Inputs
from attnmtl.core.output import MultiTaskOutput
from attnmtl.core.tasks import Task
from attnmtl.models.attention_mtl import read_tasks, task_readouts
from attnmtl.models.base import MultiTaskModel
from attnmtl.models.registry import register_model


class FusionAttention(nn.Module):
    """Softmax attention over K source sequences at every step, with a residual.

    Args:
        dim: feature width D of the query and of every source.
        init_scale: std of the query and key projections' initial weights (small: the fusion
            starts close to a uniform mix); the value projection starts at the identity.
    """

    def __init__(self, dim: int, init_scale: float = 0.02) -> None:
        super().__init__()
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        for proj in (self.query, self.key):
            nn.init.normal_(proj.weight, std=init_scale)
            nn.init.zeros_(proj.bias)
        nn.init.eye_(self.value.weight)
        nn.init.zeros_(self.value.bias)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, query: Tensor, sources: Tensor) -> tuple[Tensor, Tensor]:
        """query (B, T, D), sources (B, T, K, D) -> fused (B, T, D) and weights (B, T, K)."""
        q = self.query(query).unsqueeze(2)  # (B, T, 1, D)
        k = self.key(sources)  # (B, T, K, D)
        scores = (q * k).sum(-1) * self.scale  # (B, T, K)
        weights = scores.softmax(-1)
        mixed = (weights.unsqueeze(-1) * self.value(sources)).sum(2)  # (B, T, D)
        return query + mixed, weights


@register_model("attention_fusion")
class AttentionFusionMTL(MultiTaskModel):
    """Frozen source runs fused by attention, with a pooling and a head per target task.

    Args:
        tasks: the target tasks (injected from the data set).
        sources: the K frozen source encoders (each returning an
            :class:`~attnmtl.encoders.EncoderOutput` with per-step features of one width
            ``dim``), on the same inputs as the target data. A config names source *runs*
            (``sources: [RUN_DIR, ...]``, ``checkpoint: best``): the run layer loads their
            shared encoders (:func:`attnmtl.run.load.source_encoders`) and hands them in; the
            model itself reads nothing from disk.
        base: index of the source whose features are the query.
        attention_options: keyword arguments of each task's
            :class:`~attnmtl.attention.AttentionPooling`.
        head_hidden_dim: hidden width of each task's MLP head; None = one Linear layer.
        dropout: dropout on the pooled features and inside MLP heads.
    """

    splits_features = True

    def __init__(
        self,
        tasks: Sequence[Task],
        sources: Sequence[nn.Module],
        base: int = 0,
        attention_options: Mapping[str, Any] | None = None,
        head_hidden_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(tasks)
        if not sources:
            raise ValueError("model.sources is empty; expected one or more source encoders")
        if not 0 <= base < len(sources):
            raise ValueError(f"model.base={base!r}; expected 0 <= base < {len(sources)}")
        encoders = list(sources)
        for encoder in encoders:  # frozen: eval mode (see train) and no gradient
            encoder.requires_grad_(False)
        dims = [int(getattr(e, "dim", -1)) for e in encoders]
        if min(dims) < 0:
            raise ValueError(
                "every source needs a feature width `dim` (an attnmtl encoder, e.g. a finished "
                "attention_mtl run's `encoder`)"
            )
        if len(set(dims)) != 1:
            raise ValueError(f"source feature widths {dims}; expected one width for all sources")
        self.sources = nn.ModuleList(encoders)
        self.base = base
        dim = dims[0]
        self.fusion = FusionAttention(dim)
        self.attention, self.heads = task_readouts(
            self.tasks, dim, attention_options, head_hidden_dim, dropout
        )
        self.dropout = nn.Dropout(dropout)

    def train(self, mode: bool = True) -> AttentionFusionMTL:
        """Train mode for the fusion, poolings and heads; the sources stay in eval mode."""
        super().train(mode)
        self.sources.eval()
        return self

    def task_modules(self, task: str) -> list[nn.Module]:
        return [self.attention[task], self.heads[task]]

    def fuse(
        self, inputs: Inputs, lengths: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """The fused sequence (B, T, D), the weights (B, T, K) and the mask (B, T) or None."""
        with torch.no_grad():  # the sources are frozen
            outs = [encoder(inputs, lengths) for encoder in self.sources]
        stacked = torch.stack([o.sequence for o in outs], 2)  # (B, T, K, D)
        fused, weights = self.fusion(outs[self.base].sequence, stacked)
        return fused, weights, outs[0].mask

    def forward(self, inputs: Inputs, lengths: Tensor | None = None) -> MultiTaskOutput:
        """Every task's predictions and attention (B, T), the fused sequence, and
        ``extras["fusion"]``: the weights (B, T, K) over the sources."""
        fused, weights, mask = self.fuse(inputs, lengths)
        sequences = self.branch(fused)
        preds, attention = read_tasks(self.attention, self.heads, self.dropout, sequences, mask)
        return MultiTaskOutput(preds, attention, fused, {"fusion": weights})

    def fusion_weights(self, inputs: Inputs, lengths: Tensor | None = None) -> Tensor:
        """Per-sample weights (B, K) over the sources: the step weights averaged over real steps."""
        with torch.no_grad():
            _, weights, mask = self.fuse(inputs, lengths)  # (B, T, K)
        if mask is None:
            return weights.mean(1)
        m = mask.unsqueeze(-1).to(weights.dtype)  # (B, T, 1)
        return (weights * m).sum(1) / m.sum(1).clamp_min(1)
