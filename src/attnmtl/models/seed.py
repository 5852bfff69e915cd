"""The seed note's two models, as named presets, with the note's defects fixed.

Axes: B batch, T time, F input features, D hidden size.

``seed_attn_rnn`` is the note's ``AttnRNN``: an RNN (hidden 20), a Linear scoring each step,
softmax over time, the weighted sum of the hidden states and a Linear output.
``seed_attn_transfer_mtl`` is its ``AttnTransferMTL``: one RNN per task sharing one attention
scorer, a binary head (task 1) and a 2-class head (task 2), each sample routed by a task mask.

Fixed against the note: losses take logits (BCE-with-logits, not BCELoss on raw outputs); the
initial hidden state is created by the RNN on the input's device; the model returns every
task's predictions for every sample and the loss selects each task's samples (the note zero-filled
one output tensor by masked assignment and sliced it); each task's loss is the mean over its own
samples and a task absent from a batch adds nothing. The note's text calls the encoder shared
while its code gives each task an RNN; the code's version is the default, ``shared_encoder=True``
gives the text's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnmtl.attention import AttentionPooling
from attnmtl.core.output import MultiTaskOutput
from attnmtl.encoders import RNNEncoder
from attnmtl.models.registry import register_model

SEED_TASKS = ("task1", "task2")


def logit_loss(logits: Tensor, target: Tensor) -> Tensor:
    """BCE-with-logits for one output unit, cross-entropy for several."""
    if logits.shape[-1] == 1:
        return F.binary_cross_entropy_with_logits(logits.squeeze(-1), target.float())
    return F.cross_entropy(logits, target.long())


@register_model("seed_attn_rnn")
class SeedAttnRNN(nn.Module):
    """The seed's ``AttnRNN``: RNN + attention pooling (a Linear scorer) + a Linear output.

    Args:
        input_dim: features F per step (10 in the note).
        hidden_dim: RNN hidden size (20 in the note).
        output_dim: outputs; 1 = one binary logit (the note's), C > 1 = C class logits.
        cell: ``rnn`` as in the note, or ``gru`` / ``lstm``.
    """

    def __init__(
        self, input_dim: int = 10, hidden_dim: int = 20, output_dim: int = 1, cell: str = "rnn"
    ) -> None:
        super().__init__()
        if output_dim < 1:
            raise ValueError(f"output_dim={output_dim!r}; expected >= 1")
        self.encoder = RNNEncoder(input_dim, hidden_dim, cell=cell, pooling="attention")
        self.head = nn.Linear(hidden_dim, output_dim)

    def forward(
        self, x: Tensor, lengths: Tensor | None = None, return_weights: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Logits (B, output_dim) for ``x`` (B, T, F); with ``return_weights`` also (B, T)."""
        enc = self.encoder(x, lengths)
        logits = self.head(enc.pooled)
        if return_weights:
            assert enc.attention is not None
            return logits, enc.attention
        return logits

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """BCE-with-logits (one output) or cross-entropy (several) against ``target`` (B,)."""
        return logit_loss(logits, target)


@register_model("seed_attn_transfer_mtl")
class SeedAttnTransferMTL(nn.Module):
    """The seed's ``AttnTransferMTL``: per-task RNNs, one shared attention scorer, two heads.

    Args:
        input_dim: features F per step.
        hidden_dim: RNN hidden size.
        task1_dim: outputs of task 1 (1 = binary, the note's).
        task2_dim: outputs of task 2 (2 classes in the note).
        cell: ``rnn`` as in the note, or ``gru`` / ``lstm``.
        shared_encoder: one RNN for both tasks (the note's text) instead of one per task.
        task_names: names of the two tasks (the note's ``task1``, ``task2`` by default), so
            the model can train on a data set whose tasks are named otherwise.
    """

    def __init__(
        self,
        input_dim: int = 10,
        hidden_dim: int = 20,
        task1_dim: int = 1,
        task2_dim: int = 2,
        cell: str = "rnn",
        shared_encoder: bool = False,
        task_names: tuple[str, str] = SEED_TASKS,
    ) -> None:
        super().__init__()
        if task1_dim < 1 or task2_dim < 1:
            raise ValueError(f"task1_dim={task1_dim!r}, task2_dim={task2_dim!r}; expected >= 1")
        if len(task_names) != 2 or task_names[0] == task_names[1] or "shared" in task_names:
            raise ValueError(
                f"task_names={task_names!r}; expected two distinct names other than 'shared'"
            )
        self.task_names = tuple(task_names)
        self.shared_encoder = shared_encoder
        self.attention = AttentionPooling(hidden_dim)  # the one scorer both tasks share
        names = ("shared",) if shared_encoder else self.task_names
        self.encoders = nn.ModuleDict(
            {n: RNNEncoder(input_dim, hidden_dim, cell=cell, pooling=self.attention) for n in names}
        )
        self.heads = nn.ModuleDict(
            {
                self.task_names[0]: nn.Linear(hidden_dim, task1_dim),
                self.task_names[1]: nn.Linear(hidden_dim, task2_dim),
            }
        )

    def _rnn(self, name: str) -> nn.Module:
        encoder = self.encoders[name]
        assert isinstance(encoder, RNNEncoder)
        return encoder.rnn

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> MultiTaskOutput:
        """Both tasks' logits and attention (B, T) for every sample of ``x`` (B, T, F)."""
        preds, attention = {}, {}
        shared = self.encoders["shared"](x, lengths) if self.shared_encoder else None
        for task in self.task_names:
            enc = shared if shared is not None else self.encoders[task](x, lengths)
            preds[task] = self.heads[task](enc.pooled)
            attention[task] = enc.attention
        return MultiTaskOutput(preds, attention, shared.sequence if shared is not None else None)

    def loss(
        self, output: MultiTaskOutput, target: Tensor, task_mask: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The note's objective: BCE on task-1 samples + CE on task-2 samples.

        Args:
            output: this model's output for the batch.
            target: (B,) each sample's label for its own task.
            task_mask: (B,) 1 or 2, the task each sample is labelled for (the note's convention).

        Returns:
            The total and the per-task losses; a task with no sample in the batch is absent
            from both (it adds nothing, not a zero with a gradient, not NaN).
        """
        if task_mask.shape != target.shape[:1] or target.dim() != 1:
            raise ValueError(
                f"target {tuple(target.shape)} and task_mask {tuple(task_mask.shape)}; "
                "expected two (B,) tensors"
            )
        losses = {}
        for index, task in enumerate(self.task_names, start=1):
            rows = task_mask == index
            if bool(rows.any()):
                losses[task] = logit_loss(output.preds[task][rows], target[rows])
        if not losses:
            raise ValueError("task_mask routes no sample to task 1 or task 2; expected values 1, 2")
        return torch.stack(list(losses.values())).sum(), losses

    def shared_parameters(self) -> list[nn.Parameter]:
        """The attention scorer (and the RNN, with ``shared_encoder``)."""
        params = list(self.attention.parameters())
        if self.shared_encoder:
            params += list(self._rnn("shared").parameters())
        return params

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """The task's head (and its own RNN, unless the encoder is shared)."""
        if task not in self.task_names:
            raise ValueError(f"task={task!r}; expected one of: {', '.join(self.task_names)}")
        params = list(self.heads[task].parameters())
        if not self.shared_encoder:
            params += list(self._rnn(task).parameters())
        return params
