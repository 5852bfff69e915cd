"""MTAN: a shared CNN, and per task an attention mask over every block's features.

Axes: B batch, C channels, S spatial axes (L for 1-D maps, H W for 2-D maps), P positions.

Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019. One shared
network is a global feature pool; each task selects from it with soft masks learned per block,
so tasks share features where that helps and take their own where it does not, at a small
parameter cost per task. For task i and block j (the paper's Sec. 3.2):

    a_i^(j) = h_i^(j)(g_i^(j)([u^(j); f^(j)(â_i^(j−1))]))     the mask, in (0, 1)
    â_i^(j) = a_i^(j) ⊙ p^(j)                                 the task's attended features

``g``, ``h`` are 1×1 convolutions with batch norm (ReLU, then Sigmoid):
:class:`~attnmtl.attention.SpatialAttention`; block 1 reads ``u^(1)`` alone. ``f^(j)`` is a
3×3 convolution, batch norm and ReLU followed by the block's pooling, taking ``â^(j)`` to the
next block's channels and resolution. The paper writes ``f^(j)`` without a task index and its
code (``encoder_block_att`` in lorenmt/mtan) shares it across tasks; ``shared_projection=False``
gives each task its own. The encoder's blocks have one convolution each, so ``u^(j) = p^(j)`` =
the block's convolution output before pooling. After the last block ``f`` keeps the channels
(as the paper's classification network does) and each task attention-pools its final map into
one vector for its head.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from attnmtl.attention import SpatialAttention
from attnmtl.core.batch import Inputs
from attnmtl.core.output import MultiTaskOutput
from attnmtl.core.tasks import Task
from attnmtl.encoders import ConvEncoder
from attnmtl.encoders.cnn import ConvBlock
from attnmtl.encoders.pooling import apply_pooling, make_pooling, pooled_dim
from attnmtl.models.base import MultiTaskModel, make_head
from attnmtl.models.encoder import SharedEncoder
from attnmtl.models.hard_sharing import check_encoder_options
from attnmtl.models.registry import register_model


@dataclass
class MTANTrace:
    """The shared maps and each task's masks, attended maps and final map of one pass.

    Attributes:
        shared: ``p^(j)`` per block, (B, C_j, *S_j).
        masks: task → ``a^(j)`` per block, (B, C_j, *S_j), in (0, 1).
        attended: task → ``â^(j) = a^(j) ⊙ p^(j)`` per block.
        outputs: task → ``f^(J)(â^(J))`` pooled, (B, C_J, *S_last): what the task's pooling reads.
    """

    shared: list[Tensor]
    masks: dict[str, list[Tensor]]
    attended: dict[str, list[Tensor]]
    outputs: dict[str, Tensor]


def projection(dims: int, cin: int, cout: int) -> nn.Sequential:
    """MTAN's ``f``: a 3×3 convolution, batch norm and ReLU for 1-D or 2-D maps."""
    conv = nn.Conv1d if dims == 1 else nn.Conv2d
    norm = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
    return nn.Sequential(conv(cin, cout, 3, padding=1, bias=False), norm(cout), nn.ReLU(True))


@register_model("mtan")
class MTAN(MultiTaskModel):
    """A shared :class:`~attnmtl.encoders.ConvEncoder` with per-task MTAN masks at every block.

    Args:
        tasks: the tasks (injected from the data set).
        input_shape: one sample's input shape (injected).
        layout: ``image`` (2-D maps), ``sequence`` or ``table`` (1-D maps) (injected).
        encoder: ``cnn``, the only backbone MTAN is defined on here.
        encoder_options: keyword arguments of the CNN (``channels``, ``kernel_size``,
            ``downsample``), without ``attention``, ``dims`` or pooling.
        shared_projection: one ``f^(j)`` for all tasks (the paper and its code), or one per task.
        pooling_options: options of each task's attention pooling over its final map.
        head_hidden_dim: hidden width of each task's MLP head; None = one Linear layer.
        dropout: dropout on the pooled features and inside MLP heads.

    ``attention[task]`` is the task's pooling weights over its final map's positions,
    (B, *S_last) — (B, Q, *S_last) with Q queries — summing to one; the masks are in
    :meth:`trace`. ``features`` is None: tasks read every block's shared map, so no single
    tensor carries all the gradient the shared encoder receives.
    """

    def __init__(
        self,
        tasks: Sequence[Task],
        input_shape: tuple[int, ...],
        layout: str = "image",
        encoder: str = "cnn",
        encoder_options: Mapping[str, Any] | None = None,
        shared_projection: bool = True,
        pooling_options: Mapping[str, Any] | None = None,
        head_hidden_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(tasks)
        if encoder != "cnn":
            raise ValueError(f"encoder={encoder!r}; mtan is built on the 'cnn' encoder")
        reserved = ("attention", "dims", "pooling", "pooling_options")
        options = check_encoder_options(encoder_options or {}, reserved)
        self.encoder = SharedEncoder("cnn", tuple(input_shape), layout, pooling="mean", **options)
        dims, channels = self.cnn.dims, [self._channels(b) for b in self.cnn.blocks]
        sizes = [*channels[1:], channels[-1]]  # f^(j) output channels: the next block's

        def projections() -> nn.ModuleList:
            pairs = zip(channels, sizes, strict=True)
            return nn.ModuleList(projection(dims, c, n) for c, n in pairs)

        self.shared_projection = shared_projection
        self.projections = (
            projections()
            if shared_projection
            else nn.ModuleDict({name: projections() for name in self.tasks})
        )
        self.attention = nn.ModuleDict(
            {
                name: nn.ModuleList(
                    SpatialAttention(c if j == 0 else 2 * c, c, c, dims)
                    for j, c in enumerate(channels)
                )
                for name in self.tasks
            }
        )
        self.pools = nn.ModuleDict(
            {name: make_pooling("attention", channels[-1], pooling_options) for name in self.tasks}
        )
        self.dropout = nn.Dropout(dropout)
        pooled = pooled_dim(self.pools[next(iter(self.tasks))], channels[-1])
        self.heads = nn.ModuleDict(
            {
                name: make_head(pooled, task.out_dim, head_hidden_dim, dropout)
                for name, task in self.tasks.items()
            }
        )

    @staticmethod
    def _channels(block: nn.Module) -> int:
        assert isinstance(block, ConvBlock)
        conv = block.conv[0]
        assert isinstance(conv, nn.Conv1d | nn.Conv2d)
        return int(conv.out_channels)

    @property
    def cnn(self) -> ConvEncoder:
        """The shared CNN."""
        cnn = self.encoder.encoder
        assert isinstance(cnn, ConvEncoder)
        return cnn

    def _projection(self, task: str, index: int) -> nn.Module:
        table = self.projections
        chain = table if isinstance(table, nn.ModuleList) else table[task]
        assert isinstance(chain, nn.ModuleList)
        return chain[index]

    def task_modules(self, task: str) -> list[nn.Module]:
        modules = [self.attention[task], self.pools[task], self.heads[task]]
        if isinstance(self.projections, nn.ModuleDict):  # one f per task
            modules.append(self.projections[task])
        return modules

    def trace(self, inputs: Inputs, lengths: Tensor | None = None) -> MTANTrace:
        """Run the shared CNN and every task's masks; see :class:`MTANTrace`."""
        if not isinstance(inputs, Tensor):
            raise ValueError(f"mtan takes one input tensor, got arrays {sorted(inputs)}")
        if lengths is not None:
            raise ValueError("mtan's cnn does not take lengths")
        cnn = self.cnn
        h = self.encoder.adapt(inputs)
        if h.dim() != cnn.dims + 2 or h.shape[1] != cnn.in_channels:
            raise ValueError(f"input {tuple(inputs.shape)} does not fit the mtan cnn")
        blocks = [b for b in cnn.blocks if isinstance(b, ConvBlock)]
        shared = []
        for j, block in enumerate(blocks):
            p = block.conv(h)  # (B, C_j, *S_j)
            shared.append(p)
            if j < len(blocks) - 1:
                h = block.pool(p)  # (B, C_j, *S_{j+1})
        masks: dict[str, list[Tensor]] = {}
        attended: dict[str, list[Tensor]] = {}
        outputs: dict[str, Tensor] = {}
        for name in self.tasks:
            masks[name], attended[name] = [], []
            prev: Tensor | None = None
            masking = self.attention[name]
            assert isinstance(masking, nn.ModuleList)
            for j, (block, p, att) in enumerate(zip(blocks, shared, masking, strict=True)):
                x = p if prev is None else torch.cat([p, prev], 1)  # (B, C_j or 2 C_j, *S_j)
                gated, mask = att(x, features=p, return_weights=True)
                masks[name].append(mask)
                attended[name].append(gated)
                prev = block.pool(self._projection(name, j)(gated))  # (B, C_{j+1}, *S_{j+1})
            assert prev is not None
            outputs[name] = prev
        return MTANTrace(shared, masks, attended, outputs)

    def forward(self, inputs: Inputs, lengths: Tensor | None = None) -> MultiTaskOutput:
        """Every task's predictions and pooling weights (B, *S_last)."""
        trace = self.trace(inputs, lengths)
        preds, attention = {}, {}
        for name, out in trace.outputs.items():
            seq = out.flatten(2).transpose(1, 2)  # (B, P, C)
            pooled, weights = apply_pooling(self.pools[name], seq, None)
            preds[name] = self.heads[name](self.dropout(pooled))  # (B, out)
            assert weights is not None
            attention[name] = weights.reshape(*weights.shape[:-1], *out.shape[2:])  # (B, *S)
        return MultiTaskOutput(preds, attention, None)
