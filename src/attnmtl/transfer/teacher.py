"""Frozen models to transfer from: pretrained Hugging Face models (and :func:`freeze`).

Loading a pretrained model offline lives with the encoder that fine-tunes one
(:mod:`attnmtl.encoders.hf`); a teacher is the same model, frozen.

Axes: B batch, T time.

A teacher (or a fusion source) is frozen — ``requires_grad=False`` on every parameter, always
in eval mode — and lives outside the student: it is no submodule of the model being trained,
so the optimizer, checkpoints and DDP never see it. Finished attnmtl runs are loaded as
teachers by the run layer (:func:`attnmtl.run.load.load_teacher`), which builds on these.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from attnmtl.core.batch import Inputs
from attnmtl.core.output import MultiTaskOutput
from attnmtl.encoders.hf import PRETRAINED, TEXT_EXTRA, load_pretrained, model_folder
from attnmtl.encoders.pooling import lengths_to_mask

__all__ = ["PRETRAINED", "TEXT_EXTRA", "HFTeacher", "freeze", "load_pretrained", "model_folder"]


def freeze(model: nn.Module) -> nn.Module:
    """``model`` in eval mode with no parameter requiring a gradient."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class HFTeacher(nn.Module):
    """A Hugging Face encoder called on attnmtl batches: token ids (B, T) and lengths."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: Inputs, lengths: Tensor | None = None) -> MultiTaskOutput:
        if not isinstance(inputs, Tensor) or inputs.dim() != 2 or inputs.is_floating_point():
            raise ValueError(
                "a Hugging Face teacher takes token ids (B, T) of its own tokenizer; got "
                + (
                    f"{tuple(inputs.shape)} {inputs.dtype}"
                    if isinstance(inputs, Tensor)
                    else "a dict"
                )
            )
        mask = torch.ones_like(inputs, dtype=torch.long)
        if lengths is not None:
            mask = lengths_to_mask(lengths, inputs.shape[1]).long()  # (B, T)
        out: Any = self.model(input_ids=inputs, attention_mask=mask)
        return MultiTaskOutput({}, {}, out.last_hidden_state)
