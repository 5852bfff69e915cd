"""Learning to Branch: a tree of blocks whose branching is learnt with Gumbel-softmax.

Axes: B batch, D block width, N nodes of a layer, K tasks (the leaves).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from attnmtl.core.batch import Inputs
from attnmtl.core.output import MultiTaskOutput
from attnmtl.core.tasks import Task
from attnmtl.models.base import MultiTaskModel, make_head
from attnmtl.models.encoder import build_encoder
from attnmtl.models.experts import check_count
from attnmtl.models.hard_sharing import SHARED_POOLINGS, check_encoder_options
from attnmtl.models.registry import register_model


class BranchNode(nn.Module):
    """One node of the tree: logits over the previous layer's nodes (its parent) and a block,
    Linear(D, D) + ReLU, on the parents' mixture."""

    def __init__(self, parents: int, dim: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(parents))
        self.block = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())

    def choice(self, tau: float, hard: bool, training: bool) -> Tensor:
        """The weights over the parents (N,): a Gumbel-softmax sample in training, the most
        likely parent (one-hot) in evaluation."""
        if not training:
            return F.one_hot(self.logits.argmax(), self.logits.numel()).to(self.logits.dtype)
        return F.gumbel_softmax(self.logits, tau=tau, hard=hard)


@register_model("ltb")
class LearningToBranch(MultiTaskModel):
    """Guo, Lee & Ulbricht, "Learning to Branch for Multi-Task Learning", ICML 2020.

    Where to branch a shared network into task-specific ones is usually hand-designed. Here a
    shared encoder is the root, followed by ``depth`` layers of blocks: layer l has ``width``
    nodes (the last one, one node per task: the leaves), and every node chooses its parent
    among the layer below by learnt logits, sampled with Gumbel-softmax (temperature ``tau``;
    ``hard`` for the straight-through one-hot) so the choice is trained by gradient descent
    with the weights (the paper's §3). A node's input is the parents' outputs weighted by its
    sample; in evaluation every node takes its most likely parent, so the model is the tree
    :meth:`branching` reads off. (The paper then retrains the found tree from scratch; here the
    tree is learnt jointly and used as found.) Each task's head reads its leaf.

    Parameters: the encoder and every inner node are shared (a node may feed several tasks);
    each task owns its leaf node (block and parent logits) and its head.
    ``attention[task]`` is the leaf's weights over its candidate parents (B, width), drawn by
    the report as a gate (:meth:`gate_labels`); ``features`` is the encoder's pooled vector.
    There is no single cut per task (the inner nodes are shared in parts), so gradient methods
    run in ``parameters`` mode on it.

    Args:
        tasks, input_shape, layout: injected from the data set.
        encoder: ``rnn``, ``transformer``, ``cnn`` or ``mlp`` (the root).
        depth: branching layers, >= 1 (the last is the leaves).
        width: nodes of each inner layer, >= 1.
        dim: D, the blocks' width (a Linear maps the encoder's output to it).
        tau: the Gumbel-softmax temperature, > 0.
        hard: straight-through one-hot samples in training.
        encoder_options, pooling, pooling_options: the root encoder's, as in
            :class:`~attnmtl.models.HardSharing`.
        head_hidden_dim: hidden width of each task's head; None = one Linear layer.
        dropout: dropout on each leaf's output and inside MLP heads.
    """

    gated = True  # attention[task]: the leaf's weights over its parents

    def __init__(
        self,
        tasks: Sequence[Task],
        input_shape: tuple[int, ...],
        layout: str = "sequence",
        encoder: str = "rnn",
        depth: int = 2,
        width: int = 2,
        dim: int = 64,
        tau: float = 1.0,
        hard: bool = False,
        encoder_options: Mapping[str, Any] | None = None,
        pooling: str = "mean",
        pooling_options: Mapping[str, Any] | None = None,
        head_hidden_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(tasks)
        check_count("depth", depth)
        check_count("width", width)
        check_count("dim", dim)
        if isinstance(tau, bool) or not (float(tau) > 0):
            raise ValueError(f"tau={tau!r}; expected a number > 0")
        if pooling not in SHARED_POOLINGS:
            raise ValueError(f"pooling={pooling!r}; expected one of: {', '.join(SHARED_POOLINGS)}")
        options = check_encoder_options(encoder_options or {}, ("pooling", "pooling_options"))
        self.encoder = build_encoder(
            encoder,
            tuple(input_shape),
            layout,
            pooling=pooling,
            pooling_options=pooling_options,
            **options,
        )
        self.stem = nn.Sequential(nn.Linear(self.encoder.out_dim, dim), nn.ReLU())
        self.tau, self.hard, self.width = float(tau), bool(hard), width
        self.inner = nn.ModuleList()
        parents = 1
        for _ in range(depth - 1):
            self.inner.append(nn.ModuleList(BranchNode(parents, dim) for _ in range(width)))
            parents = width
        self.leaves = nn.ModuleDict({t: BranchNode(parents, dim) for t in self.tasks})
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict(
            {n: make_head(dim, t.out_dim, head_hidden_dim, dropout) for n, t in self.tasks.items()}
        )

    def task_modules(self, task: str) -> list[nn.Module]:
        return [self.leaves[task], self.heads[task]]

    def gate_labels(self, task: str) -> list[str]:
        """The candidate parents of a leaf."""
        count = cast(BranchNode, self.leaves[task]).logits.numel()
        return ["root"] if count == 1 else [f"node {j}" for j in range(count)]

    def branching(self) -> dict[str, list[int]]:
        """The tree as found: per inner layer (``layer1``, ...) each node's most likely parent,
        and per task its leaf's."""
        tree = {
            f"layer{i + 1}": [int(cast(BranchNode, n).logits.argmax()) for n in nodes]
            for i, nodes in enumerate(cast(Sequence[nn.ModuleList], self.inner))
        }
        tree.update({t: [int(cast(BranchNode, n).logits.argmax())] for t, n in self.leaves.items()})
        return tree

    def forward(self, inputs: Inputs, lengths: Tensor | None = None) -> MultiTaskOutput:
        """The root, the branching layers (one sample of every node's parent per forward
        pass, shared by all tasks), each task's head on its leaf."""
        shared = self.encoder(inputs, lengths).pooled  # (B, D_enc)
        outs = self.stem(shared).unsqueeze(1)  # (B, 1, D): the root's one node
        for nodes in cast(Sequence[nn.ModuleList], self.inner):
            outs = torch.stack([self._node(cast(BranchNode, n), outs)[0] for n in nodes], 1)
        preds, attention = {}, {}
        for task in self.tasks:
            z, weights = self._node(cast(BranchNode, self.leaves[task]), outs)
            preds[task] = self.heads[task](self.dropout(z))
            attention[task] = weights.expand(shared.shape[0], -1)  # (B, N)
        return MultiTaskOutput(preds, attention, shared)

    def _node(self, node: BranchNode, parents: Tensor) -> tuple[Tensor, Tensor]:
        """A node's output (B, D) on its parents' outputs (B, N, D), and its weights (N,)."""
        weights = node.choice(self.tau, self.hard, self.training).to(parents.dtype)
        return node.block((weights[None, :, None] * parents).sum(1)), weights
