"""Attention-transfer losses against their definitions: hand values and explicit references."""

import math

import pytest
import torch
import torch.nn.functional as F
from scipy.special import rel_entr

from attnmtl.transfer.losses import (
    activation_transfer_loss,
    attention_kl,
    attention_map,
    logit_distillation,
    relation_kl,
    value_relation_kl,
)

TOL = {"atol": 1e-6, "rtol": 1e-5}


def close(actual, expected):
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=actual.dtype), **TOL)


# --- AT maps (Zagoruyko & Komodakis) -------------------------------------------------------


def test_attention_map_hand_computed():
    # Two channels, 2x2: Σ_c A_c² = [2, 4, 4, 2], norm √40.
    a = torch.tensor([[[[1.0, 2.0], [0.0, 1.0]], [[-1.0, 0.0], [2.0, -1.0]]]])
    expected = torch.tensor([[2.0, 4.0, 4.0, 2.0]]) / math.sqrt(40.0)
    close(attention_map(a), expected)  # the function averages over channels: same map as the sum
    close(attention_map(a), F.normalize(a.pow(2).sum(1).flatten(1), dim=1))
    # p = 1 takes absolute values: Σ_c |A_c| = [2, 2, 2, 2].
    close(attention_map(a, p=1.0), torch.full((1, 4), 0.5))


def test_attention_map_channels_last_sequence():
    x = torch.randn(3, 5, 4)  # (B, T, D)
    out = attention_map(x, channels_last=True)
    assert out.shape == (3, 5)
    close(out, attention_map(x.transpose(1, 2)))
    close(out.norm(dim=1), torch.ones(3))


def test_attention_map_rejects_no_spatial_axis():
    with pytest.raises(ValueError, match="spatial"):
        attention_map(torch.randn(2, 3))


def _tiny_pair():
    # Sample 0: student map [1, 0], teacher map [1, 1]/√2. Sample 1: identical maps.
    student = torch.tensor([[[[1.0, 0.0]]], [[[1.0, 2.0]]]])  # (2, 1, 1, 2)
    teacher = torch.tensor([[[[1.0, 1.0]]], [[[2.0, 4.0]]]])
    return student, teacher


def test_at_official_hand_value():
    student, teacher = _tiny_pair()
    # Σ diff² of sample 0 = (1 - 1/√2)² + 1/2 = 2 - √2; mean over 2 samples × 2 positions.
    expected = (2 - math.sqrt(2)) / 4
    close(activation_transfer_loss(student, teacher), expected)
    close(activation_transfer_loss(student, teacher, beta=1000.0), 1000 * expected)


def test_at_paper_hand_value_and_conventions_differ():
    student, teacher = _tiny_pair()
    # β/2 · mean_b ‖diff‖₂ = 500 · (√(2 - √2) + 0) / 2.
    expected = 500 * math.sqrt(2 - math.sqrt(2)) / 2
    paper = activation_transfer_loss(student, teacher, convention="paper", beta=1000.0)
    close(paper, expected)
    official = activation_transfer_loss(student, teacher, convention="official", beta=1000.0)
    assert abs(paper.item() - official.item()) > 1.0


@pytest.mark.parametrize("convention", ["official", "paper"])
def test_at_identical_is_zero_with_finite_gradient(convention):
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = activation_transfer_loss(x, x.detach() * 2.0, convention=convention)
    close(loss, 0.0)
    loss.backward()
    assert torch.isfinite(x.grad).all()


def _official(s, t):
    return (attention_map(s) - attention_map(t)).pow(2).mean()


def test_at_resize_interpolate_both_ways():
    big, small = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 2, 2)
    down = F.interpolate(big, size=(2, 2), mode="bilinear", align_corners=False)
    close(activation_transfer_loss(big, small, resize="interpolate"), _official(down, small))
    up = F.interpolate(small, size=(4, 4), mode="bilinear", align_corners=False)
    close(activation_transfer_loss(small, big, resize="interpolate"), _official(up, big))


def test_at_resize_pool_both_ways():
    big, small = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 2, 2)
    pooled = F.adaptive_avg_pool2d(big, (2, 2))
    close(activation_transfer_loss(big, small, resize="pool"), _official(pooled, small))
    close(activation_transfer_loss(small, big, resize="pool"), _official(small, pooled))
    # The two resizings differ when the student is the smaller one (up- vs down-sampling).
    assert not torch.allclose(
        activation_transfer_loss(small, big, resize="pool"),
        activation_transfer_loss(small, big, resize="interpolate"),
    )


def test_at_sequence_channels_last_different_lengths():
    s, t = torch.randn(2, 6, 4), torch.randn(2, 3, 8)  # (B, T, D): T 6 vs 3, D 4 vs 8
    s_first = F.interpolate(s.transpose(1, 2), size=3, mode="linear", align_corners=False)
    expected = _official(s_first, t.transpose(1, 2))
    close(activation_transfer_loss(s, t, channels_last=True), expected)


@pytest.mark.parametrize(
    ("kwargs", "shapes", "match"),
    [
        ({"convention": "both"}, ((2, 3, 4, 4), (2, 3, 4, 4)), "convention"),
        ({"resize": "nearest"}, ((2, 3, 4, 4), (2, 3, 4, 4)), "resize"),
        ({}, ((2, 3, 4, 4), (3, 3, 4, 4)), "batch"),
        ({}, ((2, 3, 4, 4), (2, 3, 4)), "rank"),
    ],
)
def test_at_rejects(kwargs, shapes, match):
    with pytest.raises(ValueError, match=match):
        activation_transfer_loss(torch.randn(shapes[0]), torch.randn(shapes[1]), **kwargs)


# --- MiniLM attention KL ---------------------------------------------------------------------


def _rows(*shape):
    return torch.randn(*shape).softmax(-1)


def test_attention_kl_hand_computed():
    t = torch.tensor([[[0.75, 0.25], [0.5, 0.5]]])  # (B=1, Tq=2, Tk=2)
    s = torch.tensor([[[0.5, 0.5], [0.9, 0.1]]])
    row0 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    row1 = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    close(attention_kl(t, s), (row0 + row1) / 2)
    close(attention_kl(t, t), 0.0)


def test_attention_kl_matches_scipy_rel_entr():
    t, s = _rows(3, 2, 5, 5), _rows(3, 2, 5, 5)
    expected = rel_entr(t.double().numpy(), s.double().numpy()).sum(-1).mean()
    close(attention_kl(t.double(), s.double()), expected)


def _pad(x, length):
    """Pad the last two axes of (..., T, T) to (length, length) with junk probabilities."""
    out = torch.rand(*x.shape[:-2], length, length)
    t = x.shape[-1]
    out[..., :t, :t] = x
    return out


def test_attention_kl_padding_does_not_change_value():
    lengths = [3, 2]
    t = [_rows(1, 2, n, n) for n in lengths]  # per-sample (1, H, n, n), un-padded
    s = [_rows(1, 2, n, n) for n in lengths]
    total = sum(attention_kl(a, b) * 2 * n for a, b, n in zip(t, s, lengths, strict=True))
    expected = total / (2 * sum(lengths))  # mean over heads × real rows of the batch
    mask = torch.tensor([[True, True, True], [True, True, False]])
    t_pad = torch.cat([_pad(x, 3) for x in t])  # junk in padded rows and keys
    s_pad = torch.cat([_pad(x, 3) for x in s])
    close(attention_kl(t_pad, s_pad, mask), expected)
    assert not torch.allclose(attention_kl(t_pad, s_pad), expected)


def test_attention_kl_zero_weights_on_padded_keys_no_nan():
    mask = torch.tensor([[True, True, False, False]])
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    s = logits.masked_fill(~mask[:, None, None], float("-inf")).softmax(-1)  # exact zeros
    t = _rows(1, 2, 4, 4).masked_fill(~mask[:, None, None], 0.0)
    loss = attention_kl(t, s, mask)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_attention_kl_gradient_flows_to_student_only_when_teacher_detached():
    s_logits = torch.randn(2, 3, 4, requires_grad=True)
    t_logits = torch.randn(2, 3, 4, requires_grad=True)
    attention_kl(t_logits.softmax(-1).detach(), s_logits.softmax(-1)).backward()
    assert s_logits.grad.abs().sum() > 0 and t_logits.grad is None
    attention_kl(t_logits.softmax(-1), s_logits.softmax(-1)).backward()
    assert t_logits.grad is not None  # no detach inside: the caller decides


def test_attention_kl_heads():
    t, s = _rows(2, 4, 3, 3), _rows(2, 2, 3, 3)
    with pytest.raises(ValueError, match=r"4 heads.*student 2.*heads='mean'"):
        attention_kl(t, s)
    close(attention_kl(t, s, heads="mean"), attention_kl(t.mean(1), s.mean(1)))
    with pytest.raises(ValueError, match="heads"):
        attention_kl(t, s, heads="sum")


def test_attention_kl_pooling_weights():
    t, s = _rows(3, 4), _rows(3, 4)  # (B, Tk): one row per sample
    close(attention_kl(t, s), (t * (t / s).log()).sum(-1).mean())
    mask = torch.tensor([[True] * 4, [True] * 4, [True, True, False, False]])
    t_m = t.masked_fill(~mask, 0.0)
    expected = (t_m * (t_m.clamp_min(1e-12) / s).log()).sum(-1).mean()  # all 3 rows count
    close(attention_kl(t_m, s, mask), expected)


def test_attention_kl_rejects_bad_shapes_and_mask():
    with pytest.raises(ValueError, match="expected"):
        attention_kl(_rows(2, 3, 3), _rows(2, 3, 4))
    with pytest.raises(ValueError, match="mask"):
        attention_kl(_rows(2, 3, 3), _rows(2, 3, 3), torch.ones(2, 3))


# --- MiniLM value relation, MiniLMv2 relations ------------------------------------------------


def _relation_reference(teacher, student, heads, lengths):
    """Per-sample, per-head loop on the un-padded tokens."""
    total, rows = 0.0, 0
    for b, n in enumerate(lengths):
        for h in range(heads):
            rel = []
            for x in (teacher, student):
                d = x.shape[-1] // heads
                a = x[b, :n, h * d : (h + 1) * d]  # (n, d)
                rel.append((a @ a.T / math.sqrt(d)).softmax(-1))
            r_t, r_s = rel
            total += (r_t * (r_t.log() - r_s.log())).sum().item()
            rows += n
    return total / rows


def test_relation_kl_matches_loop_reference_with_padding():
    t, s = torch.randn(2, 5, 12), torch.randn(2, 5, 8)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    expected = _relation_reference(t, s, 4, [5, 3])
    close(relation_kl(t, s, 4, mask), expected)
    close(relation_kl(t, s, 4), _relation_reference(t, s, 4, [5, 5]))


def test_value_relation_kl_matches_loop_reference():
    t, s = torch.randn(2, 4, 12), torch.randn(2, 4, 6)
    close(value_relation_kl(t, s, 3, 3), _relation_reference(t, s, 3, [4, 4]))
    with pytest.raises(ValueError, match="relation_kl"):
        value_relation_kl(t, s, 3, 2)


def test_relation_kl_self_is_zero_and_widths_differ():
    x = torch.randn(2, 6, 64)
    close(relation_kl(x, x, 8), 0.0)
    teacher = torch.randn(2, 6, 384)  # a 12-head, 384-wide teacher
    student = torch.randn(2, 6, 64, requires_grad=True)
    loss = relation_kl(teacher, student, 16)
    close(loss, _relation_reference(teacher, student.detach(), 16, [6, 6]))
    loss.backward()
    assert student.grad.abs().sum() > 0


def test_relation_kl_rejects_non_divisible_width():
    with pytest.raises(ValueError, match="divisible"):
        relation_kl(torch.randn(2, 6, 384), torch.randn(2, 6, 64), 12)
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        relation_kl(torch.randn(2, 6, 12), torch.randn(2, 5, 12), 3)


# --- Hinton logit distillation --------------------------------------------------------------


def test_logit_distillation_multiclass_hand_value():
    temperature = 2.0
    s = torch.zeros(1, 2)  # softmax(s/T) = [0.5, 0.5]
    t = torch.tensor([[math.log(3.0) * temperature, 0.0]])  # softmax(t/T) = [0.75, 0.25]
    expected = 4.0 * (0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    close(logit_distillation(s, t, "multiclass", temperature), expected)


def test_logit_distillation_multiclass_matches_kl_div():
    s, t = torch.randn(5, 4), torch.randn(5, 4)
    expected = 9.0 * F.kl_div(
        F.log_softmax(s / 3.0, -1), F.softmax(t / 3.0, -1), reduction="batchmean"
    )
    close(logit_distillation(s, t, "multiclass", 3.0), expected)


@pytest.mark.parametrize(("kind", "shape"), [("binary", (6, 1)), ("multilabel", (6, 3))])
def test_logit_distillation_bernoulli_kl(kind, shape):
    s, t = torch.randn(shape), torch.randn(shape)
    close(logit_distillation(t, t, kind), 0.0)
    p, q = torch.sigmoid(t / 4.0), torch.sigmoid(s / 4.0)
    bern = p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()
    loss = logit_distillation(s, t, kind)
    assert loss > 0
    close(loss, 16.0 * bern.mean())


def test_logit_distillation_regression_is_mse():
    s, t = torch.randn(5, 2), torch.randn(5, 2)
    close(logit_distillation(s, t, "regression", 1.0), ((s - t) ** 2).mean())
    close(logit_distillation(s, t, "regression", 7.0), ((s - t) ** 2).mean())


def test_logit_distillation_mask():
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    mask = torch.tensor([True, False, True, False])
    close(
        logit_distillation(s, t, "multiclass", mask=mask),
        logit_distillation(s[mask], t[mask], "multiclass"),
    )
    s.requires_grad_(True)
    none = logit_distillation(s, t, "multiclass", mask=torch.zeros(4, dtype=torch.bool))
    none.backward()
    close(none, 0.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"kind": "ranking"}, "kind"), ({"kind": "binary", "temperature": 0.0}, "temperature")],
)
def test_logit_distillation_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        logit_distillation(torch.randn(2, 1), torch.randn(2, 1), **kwargs)


def test_pair_losses_are_found_by_name_and_a_bad_name_is_one_line():
    from attnmtl.run.config import parse_config
    from attnmtl.transfer.pairs import CAPTURE_KIND, PAIR_LOSSES

    assert CAPTURE_KIND == {
        "activation": "activation",
        "attention_kl": "attention",
        "value_relation": "qkv",
        "relation": "qkv",
        "tinybert_attention": "qkv",
        "pkd": "activation",
        "rkd_distance": "activation",
        "rkd_angle": "activation",
        "similarity": "activation",
        "pkt": "activation",
    }
    assert PAIR_LOSSES.names() == sorted(CAPTURE_KIND)
    bad = {"teacher": "somewhere", "pairs": [{"student": "a", "loss": "fitnet"}]}
    with pytest.raises(ValueError, match=r"loss='fitnet'; expected one of: activation, "):
        parse_config({"transfer": bad})
