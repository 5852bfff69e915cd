"""``encoder: hf``: a pretrained Hugging Face transformer as the shared encoder.

A tiny BERT (3 layers, width 16, ``tiny_bert`` in conftest.py) stands in for a real model: the
encoder's behaviour is the same, the tests take seconds. Needs transformers and peft
(``attnmtl[text]``).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

import transformers

from attnmtl.core.tasks import Task
from attnmtl.encoders import HFEncoder
from attnmtl.encoders.hf import layer_index
from attnmtl.models import create_model
from attnmtl.run.build import layer_decay_groups

VOCAB, LAYERS = 40, 3  # the tiny BERT of tests/conftest.py (fixture tiny_bert)


@pytest.fixture(scope="module")
def bert(tiny_bert: Path) -> Path:
    return tiny_bert


def hf_model(bert: Path, tasks: list[Task], **options: object) -> torch.nn.Module:
    """attention_mtl on the tiny BERT, for rows of 6 token ids."""
    return create_model(
        "attention_mtl",
        tasks=tasks,
        input_shape=(6,),
        layout="sequence",
        encoder="hf",
        encoder_options={"model": str(bert), **options},
    )


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[2, 7, 9, 11, 3, 0], [2, 8, 3, 0, 0, 0]])
    return ids, torch.tensor([5, 3])


def test_token_states_are_the_models_and_poolings_read_them(bert: Path) -> None:
    ids, lengths = batch()
    reference = transformers.AutoModel.from_pretrained(bert, local_files_only=True).eval()
    mask = (torch.arange(6)[None] < lengths[:, None]).long()
    with torch.no_grad():
        states = reference(input_ids=ids, attention_mask=mask).last_hidden_state
        cls = HFEncoder(str(bert)).eval()(ids, lengths)
        mean = HFEncoder(str(bert), pooling="mean").eval()(ids, lengths)
    torch.testing.assert_close(cls.sequence, states)
    torch.testing.assert_close(cls.pooled, states[:, 0])  # [CLS]
    torch.testing.assert_close(mean.pooled[1], states[1, :3].mean(0))  # real tokens only
    assert cls.mask is not None and cls.mask.tolist()[1] == [True] * 3 + [False] * 3


def test_eager_attention_matches_sdpa(bert: Path) -> None:
    ids, lengths = batch()
    with torch.no_grad():
        fused = HFEncoder(str(bert)).eval()(ids, lengths).sequence
        eager = HFEncoder(str(bert), attention="eager").eval()(ids, lengths).sequence
    torch.testing.assert_close(fused, eager, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("train_layers", [0, 1, LAYERS])
def test_train_layers_trains_the_last_layers_only(bert: Path, train_layers: int) -> None:
    encoder = HFEncoder(str(bert), train_layers=train_layers)
    trained = {layer_index(n) for n, p in encoder.model.named_parameters() if p.requires_grad}
    assert trained == set(range(LAYERS - train_layers, LAYERS)) or (
        train_layers == 0 and not trained
    )
    embeddings = [p for n, p in encoder.model.named_parameters() if "embeddings" in n]
    assert embeddings and not any(p.requires_grad for p in embeddings)


def test_full_fine_tuning_trains_all_but_the_unused_pooler(bert: Path) -> None:
    encoder = HFEncoder(str(bert))
    frozen = [n for n, p in encoder.model.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith("pooler.") for n in frozen)


def test_lora_is_w_plus_scaled_ba_and_merges_to_the_same_function(bert: Path) -> None:
    encoder = HFEncoder(str(bert), lora={"r": 2, "alpha": 6, "target_modules": ["query", "value"]})
    trainable = [n for n, p in encoder.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".")[-4] for n in trainable if ".layer." in n} <= {"query", "value"}
    with torch.no_grad():  # give B a value: a fresh adapter (B = 0) is the identity
        for n, p in encoder.named_parameters():
            if "lora_B" in n:
                p.normal_()
    query = encoder.model.base_model.model.encoder.layer[0].attention.self.query
    x = torch.randn(4, 16)
    a, b = query.lora_A["default"].weight, query.lora_B["default"].weight  # (r, in), (out, r)
    expected = x @ query.base_layer.weight.T + query.base_layer.bias + (6 / 2) * x @ a.T @ b.T
    torch.testing.assert_close(query(x), expected)
    ids, lengths = batch()
    encoder.eval()
    with torch.no_grad():
        before = encoder(ids, lengths).sequence
        encoder.merge_adapters()
        after = encoder(ids, lengths).sequence
    assert not any("lora_" in n for n, _ in encoder.named_parameters())
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients(bert: Path) -> None:
    ids, lengths = batch()
    grads = []
    for checkpointing in (False, True):
        encoder = HFEncoder(str(bert), gradient_checkpointing=checkpointing).train()
        encoder(ids, lengths).pooled.square().sum().backward()
        grads.append({n: p.grad for n, p in encoder.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, msg=name)


def test_gradient_checkpointing_with_frozen_embeddings_still_trains_the_layers(bert: Path) -> None:
    ids, lengths = batch()
    encoder = HFEncoder(str(bert), train_layers=1, gradient_checkpointing=True).train()
    encoder(ids, lengths).pooled.square().sum().backward()
    top = [p for n, p in encoder.model.named_parameters() if layer_index(n) == LAYERS - 1]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in top)


def test_layer_decay_scales_each_layer_by_its_depth(bert: Path) -> None:
    model = hf_model(bert, [Task("a", "multiclass", 3)])
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = layer_decay_groups(model, trainable, lr=1.0, decay=0.5)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert sum(len(g["params"]) for g in groups) == len(trainable)
    named = dict(model.encoder.encoder.model.named_parameters())
    top = LAYERS + 1
    assert lr_of[id(named["embeddings.word_embeddings.weight"])] == 0.5**top
    for i in range(LAYERS):
        weight = named[f"encoder.layer.{i}.attention.self.query.weight"]
        assert lr_of[id(weight)] == 0.5 ** (top - (i + 1))
    assert all(lr_of[id(p)] == 1.0 for p in model.heads.parameters())  # task heads: full lr


def test_layer_decay_without_layers_is_refused() -> None:
    tasks = [Task("a", "multiclass", 3)]
    model = create_model("attention_mtl", tasks=tasks, input_shape=(6, 2), layout="sequence")
    with pytest.raises(ValueError, match="no encoder with layers"):
        layer_decay_groups(model, list(model.parameters()), lr=1.0, decay=0.5)


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"train_layers": 4}, r"train_layers=4; expected 0\.\.3"),
        ({"train_layers": 1, "lora": {}}, "give one of them"),
        ({"lora": {"rank": 4}}, "unknown key 'rank'"),
        ({"lora": {"target_modules": ["q_proj"]}}, "no module named 'q_proj'.*query"),
        ({"pooling": "first"}, "pooling='first'"),
        ({"attention": "flash"}, "attention='flash'"),
    ],
)
def test_bad_options_name_the_value(bert: Path, options: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        HFEncoder(str(bert), **options)


def test_ids_outside_the_vocabulary_are_refused(bert: Path) -> None:
    encoder = HFEncoder(str(bert))
    with pytest.raises(
        ValueError, match=f"token id 30522 outside the model's vocabulary of {VOCAB}:"
    ):
        encoder(torch.tensor([[2, 30522, 3]]))


def test_a_folder_without_safetensors_is_refused(tmp_path: Path, bert: Path) -> None:
    (tmp_path / "config.json").write_text((bert / "config.json").read_text())
    with pytest.raises(ValueError, match=r"no \*\.safetensors weights"):
        HFEncoder(str(tmp_path))


def test_every_feature_split_model_reads_the_token_states(bert: Path) -> None:
    """attention_mtl splits at the token states: each task's gradient reaches the encoder."""
    model = hf_model(bert, [Task("a", "multiclass", 3), Task("b", "binary", 1)], lora={"r": 2})
    ids, lengths = batch()
    out = model(ids, lengths)
    assert out.features is not None and out.features.shape == (2, 6, 16)
    shared = model.shared_parameters()
    assert shared and all(p.requires_grad for p in shared)
    assert math.isclose(
        sum(p.numel() for p in shared),
        sum(p.numel() for p in model.encoder.parameters() if p.requires_grad),
    )
