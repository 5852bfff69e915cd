"""Cross-stitch networks: one encoder column per task, mixed after every layer by learned units.

Axes: B batch, K tasks, T time, C channels, S spatial axes, D features.

Misra, Shrivastava, Gupta & Hebert, "Cross-stitch Networks for Multi-task Learning", CVPR 2016.
Instead of choosing by hand where a network splits into task branches, every task gets a whole
network (a "column") and, after each layer, a cross-stitch unit replaces each task's activation
by a learned linear combination of all tasks' activations at that layer (the paper's eq. 1,
``x̃_k = Σ_j α_kj x_j`` at every position). Learning α learns how much to share at each depth:
α = identity is K independent networks, equal α is a shared network.

What is shared: only the cross-stitch units. Every column parameter belongs to its task, even
though, through the units, a column's early layers also feed (and get gradient from) the other
tasks' losses. There is no single shared representation, so ``features`` is None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from attnmtl.core.batch import Inputs
from attnmtl.core.output import MultiTaskOutput
from attnmtl.core.tasks import Task
from attnmtl.encoders import ConvEncoder, RNNEncoder, TransformerEncoder
from attnmtl.encoders.pooling import (
    POOLINGS,
    apply_pooling,
    lengths_to_mask,
    make_pooling,
    pooled_dim,
)
from attnmtl.models.base import MultiTaskModel, make_head
from attnmtl.models.encoder import SharedEncoder, build_encoder
from attnmtl.models.hard_sharing import check_encoder_options
from attnmtl.models.registry import register_model

# Encoders with layers to stitch between (an MLP encoder would need its own stitch points).
STITCHABLE = ("rnn", "transformer", "cnn")


class CrossStitchUnit(nn.Module):
    """Mix K tasks' activations with a learned K×K matrix: ``x̃_k = Σ_j α_kj x_j``.

    One α per pair of tasks, shared by every channel and position (the paper's eq. 1).

    Args:
        num_tasks: K >= 2.
        init_same: initial α_kk. The off-diagonal entries start at (1 − init_same) / (K − 1),
            so each row is a convex combination, which keeps activations at the same scale:
            the paper initialises its units with α_S + α_D = 1 (its design-decision study,
            Sec. 4, compares such pairs); 0.9 / 0.1 is the two-task default used here.
    """

    def __init__(self, num_tasks: int, init_same: float = 0.9) -> None:
        super().__init__()
        if num_tasks < 2:
            raise ValueError(f"num_tasks={num_tasks!r}; a cross-stitch unit mixes >= 2 tasks")
        if not 0.0 <= init_same <= 1.0:
            raise ValueError(f"init_same={init_same!r}; expected a weight in [0, 1]")
        alpha = torch.full((num_tasks, num_tasks), (1.0 - init_same) / (num_tasks - 1))
        alpha.fill_diagonal_(init_same)
        self.num_tasks = num_tasks
        self.alpha = nn.Parameter(alpha)  # (K, K): row k = output k, column j = input j

    def forward(self, x: Tensor) -> Tensor:
        """Stitch the stacked activations ``x`` (K, B, ...) into (K, B, ...)."""
        if x.dim() < 2 or x.shape[0] != self.num_tasks:
            raise ValueError(f"input {tuple(x.shape)}; expected ({self.num_tasks}, B, ...)")
        return torch.einsum("kj,j...->k...", self.alpha, x)  # (K, B, ...)


def rnn_column(
    input_shape: tuple[int, ...], layout: str, options: dict[str, Any]
) -> tuple[nn.ModuleList, float]:
    """One task's recurrent column: single-layer RNNs to stitch between, and their dropout."""
    num_layers = int(options.pop("num_layers", 1))
    dropout = float(options.pop("dropout", 0.0))
    if num_layers < 1:
        raise ValueError(f"num_layers={num_layers!r}; expected >= 1")
    first = build_encoder("rnn", input_shape, layout, pooling="last", **options)
    rest = [
        RNNEncoder(first.dim, num_layers=1, pooling="last", **options)
        for _ in range(num_layers - 1)
    ]
    return nn.ModuleList([first, *rest]), dropout


@register_model("cross_stitch")
class CrossStitch(MultiTaskModel):
    """One column per task, a cross-stitch unit after every layer, per-task pooling and heads.

    Columns by encoder kind (layers are stitched after each one, the last included, as the
    paper stitches after every pooling and fully connected layer of AlexNet):

    * ``cnn``: a :class:`~attnmtl.encoders.ConvEncoder`; stitched after each block.
    * ``rnn``: ``num_layers`` single-layer recurrent nets (``cell``, ``bidirectional``...);
      stitched between layers, with ``dropout`` applied between layers.
    * ``transformer``: a :class:`~attnmtl.encoders.TransformerEncoder`; stitched after each
      layer, its final norm applied per column after the last unit.

    Args:
        tasks: the tasks (injected; at least two).
        input_shape: one sample's input shape (injected).
        layout: ``sequence``, ``image`` or ``table`` (injected).
        encoder: ``cnn``, ``rnn`` or ``transformer``.
        encoder_options: keyword arguments of each column's encoder, without pooling.
        pooling: each task's pooling of its column's last layer: ``attention``, ``mean``, ``max``.
        pooling_options: options of the attention pooling (with ``pooling='attention'``).
        init_same: initial α_kk of every unit (see :class:`CrossStitchUnit`).
        head_hidden_dim: hidden width of each task's MLP head; None = one Linear layer.
        dropout: dropout on the pooled features and inside MLP heads.

    The paper also trains the units with a learning rate scaled up by orders of magnitude; that
    is an optimizer setting, not applied here: :meth:`shared_parameters` are exactly the units'
    α, so a trainer can give them their own parameter group.
    ``attention[task]`` holds the task's pooling weights with attention pooling — (B, *S)
    over a CNN's last map — and is empty otherwise.
    """

    def __init__(
        self,
        tasks: Sequence[Task],
        input_shape: tuple[int, ...],
        layout: str = "sequence",
        encoder: str = "cnn",
        encoder_options: Mapping[str, Any] | None = None,
        pooling: str = "attention",
        pooling_options: Mapping[str, Any] | None = None,
        init_same: float = 0.9,
        head_hidden_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(tasks)
        if len(self.tasks) < 2:
            raise ValueError(f"cross_stitch needs >= 2 tasks, got {list(self.tasks)}")
        if encoder not in STITCHABLE:
            raise ValueError(f"encoder={encoder!r}; expected one of: {', '.join(STITCHABLE)}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r}; expected one of: {', '.join(POOLINGS)}")
        options = check_encoder_options(encoder_options or {}, ("pooling", "pooling_options"))
        self.kind, shape = encoder, tuple(input_shape)
        columns: dict[str, nn.Module] = {}
        between = 0.0
        for name in self.tasks:
            if encoder == "rnn":
                columns[name], between = rnn_column(shape, layout, dict(options))
            else:  # the column's own pooling is never called: parameter-free mean
                columns[name] = build_encoder(encoder, shape, layout, pooling="mean", **options)
        self.columns = nn.ModuleDict(columns)
        self.between = nn.Dropout(between)
        self.stitches = nn.ModuleList(
            CrossStitchUnit(len(self.tasks), init_same) for _ in range(self._num_layers())
        )
        dim = self._dim()
        self.pools = nn.ModuleDict(
            {name: make_pooling(pooling, dim, pooling_options) for name in self.tasks}
        )
        self.dropout = nn.Dropout(dropout)
        pooled = pooled_dim(self.pools[next(iter(self.tasks))], dim)
        self.heads = nn.ModuleDict(
            {
                name: make_head(pooled, task.out_dim, head_hidden_dim, dropout)
                for name, task in self.tasks.items()
            }
        )

    def _adapter(self, task: str) -> SharedEncoder:
        """The column's layout adapter: the column itself, or its first layer (rnn)."""
        column = self.columns[task]
        first = column[0] if isinstance(column, nn.ModuleList) else column
        assert isinstance(first, SharedEncoder)
        return first

    def _num_layers(self) -> int:
        task = next(iter(self.tasks))
        column, enc = self.columns[task], self._adapter(task).encoder
        if isinstance(column, nn.ModuleList):
            return len(column)
        layers = enc.blocks if isinstance(enc, ConvEncoder) else enc.layers
        assert isinstance(layers, nn.ModuleList)
        return len(layers)

    def _dim(self) -> int:
        return self._adapter(next(iter(self.tasks))).dim

    def task_modules(self, task: str) -> list[nn.Module]:
        return [self.columns[task], self.pools[task], self.heads[task]]

    def _start(self, task: str, inputs: Tensor) -> Tensor:
        """The column's input to its first stitched layer (a transformer embeds it first)."""
        adapter = self._adapter(task)
        x, enc = adapter.adapt(inputs), adapter.encoder
        if isinstance(enc, ConvEncoder):
            if x.dim() != enc.dims + 2 or x.shape[1] != enc.in_channels:
                raise ValueError(f"input {tuple(inputs.shape)} does not fit the cnn columns")
            return x
        assert isinstance(enc, RNNEncoder | TransformerEncoder)
        if x.dim() != 3 or x.shape[-1] != enc.input_dim:
            raise ValueError(f"input {tuple(inputs.shape)} does not fit the {self.kind} columns")
        if isinstance(enc, TransformerEncoder):
            embedded: Tensor = enc.drop(enc.position(enc.embed(x)))  # (B, T, D)
            return embedded
        return x

    def _layer(
        self, task: str, index: int, h: Tensor, lengths: Tensor | None, mask: Tensor | None
    ) -> Tensor:
        """Layer ``index`` of one task's column on its stitched input ``h``."""
        column, enc = self.columns[task], self._adapter(task).encoder
        out: Tensor
        if isinstance(column, nn.ModuleList):  # rnn: one single-layer encoder per layer
            layer = column[index]
            rnn = layer.encoder if isinstance(layer, SharedEncoder) else layer
            assert isinstance(rnn, RNNEncoder)
            out = rnn(h, lengths).sequence  # (B, T, D), zeros at padded steps
        elif isinstance(enc, ConvEncoder):
            out = enc.blocks[index](h)  # (B, C, *S)
        else:
            assert isinstance(enc, TransformerEncoder)
            out, _ = enc.layers[index](h, mask, enc.causal, False)  # (B, T, D)
        return out

    def _finish(self, task: str, h: Tensor) -> Tensor:
        """The column's last stitched output as a sequence (B, T, D) for its pooling."""
        enc = self._adapter(task).encoder
        if isinstance(enc, TransformerEncoder):
            normed: Tensor = enc.norm(h)
            return normed
        return h.flatten(2).transpose(1, 2) if isinstance(enc, ConvEncoder) else h  # (B, T, D)

    def forward(self, inputs: Inputs, lengths: Tensor | None = None) -> MultiTaskOutput:
        """Every task's predictions and, with attention pooling, its pooling weights."""
        if not isinstance(inputs, Tensor):
            raise ValueError(f"cross_stitch takes one input tensor, got arrays {sorted(inputs)}")
        if self.kind == "cnn" and lengths is not None:
            raise ValueError("the cnn columns do not take lengths")
        names = list(self.tasks)
        hs = [self._start(n, inputs) for n in names]
        mask = None if lengths is None else lengths_to_mask(lengths, hs[0].shape[1])
        last = len(self.stitches) - 1
        for index, unit in enumerate(self.stitches):
            hs = [self._layer(n, index, h, lengths, mask) for n, h in zip(names, hs, strict=True)]
            hs = list(unit(torch.stack(hs)).unbind(0))  # K × (B, ...)
            if self.kind == "rnn" and index < last:
                hs = [self.between(h) for h in hs]
        preds, attention = {}, {}
        for name, h in zip(names, hs, strict=True):
            pooled, weights = apply_pooling(self.pools[name], self._finish(name, h), mask)
            preds[name] = self.heads[name](self.dropout(pooled))  # (B, out)
            if weights is not None:
                if self.kind == "cnn":  # weights over the last map's positions
                    weights = weights.reshape(*weights.shape[:-1], *h.shape[2:])  # (B, [Q,] *S)
                attention[name] = weights
        return MultiTaskOutput(preds, attention, None)
