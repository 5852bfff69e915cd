"""The feature and relational distillation losses on values computed by hand from each
paper's definition, their invariances, and the errors for inputs they cannot take."""

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from attnmtl.attention.selection import masked_softmax
from attnmtl.encoders import TransformerEncoder
from attnmtl.transfer.capture import Capture
from attnmtl.transfer.pairs import PAIR_LOSSES
from attnmtl.transfer.relational import (
    HintRegressor,
    attention_score_mse,
    attention_scores,
    dist_loss,
    hint_loss,
    pkd_loss,
    pkt_loss,
    rkd_angle,
    rkd_distance,
    similarity_preserving,
)


def huber(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


def test_hint_loss_regresses_the_student_then_takes_the_mse():
    regressor = HintRegressor(2, 1)
    with torch.no_grad():
        regressor.proj.weight.copy_(torch.tensor([[2.0, -1.0]]))
        regressor.proj.bias.fill_(0.5)
    student = torch.tensor([[1.0, 3.0], [0.0, 1.0]])  # r: 2·1 − 3 + .5 = −.5; 0 − 1 + .5 = −.5
    teacher = torch.tensor([[1.5], [0.5]])
    assert float(hint_loss(student, teacher, regressor).detach()) == pytest.approx((4 + 1) / 2)
    maps = HintRegressor(3, 5, spatial=2)(torch.rand(2, 3, 4, 4))  # a 1×1 conv over channels
    assert maps.shape == (2, 5, 4, 4)
    with pytest.raises(ValueError, match="expected equal shapes"):
        hint_loss(torch.rand(2, 3), torch.rand(2, 4))


def test_tinybert_attention_mse_on_scores_before_softmax_over_real_pairs():
    s = torch.tensor([[[[1.0, 5.0], [2.0, 7.0]]]])  # (1, 1, 2, 2)
    t = torch.tensor([[[[3.0, 0.0], [0.0, 0.0]]]])
    assert float(attention_score_mse(s, t)) == pytest.approx((4 + 25 + 4 + 49) / 4)
    mask = torch.tensor([[True, False]])  # only the (0, 0) pair is real
    assert float(attention_score_mse(s, t, mask)) == pytest.approx(4.0)
    q, k = torch.rand(2, 3, 4), torch.rand(2, 3, 4)
    scores = attention_scores(q, k, heads=2)
    by_hand = q[:, :, 2:] @ k[:, :, 2:].transpose(1, 2) / math.sqrt(2)  # head 1
    torch.testing.assert_close(scores[:, 1], by_hand)


def test_pkd_compares_normalised_cls_states():
    s = torch.tensor([[[3.0, 4.0], [9.0, 9.0]]])  # (1, T=2, 2): the [CLS] state is [3, 4]
    t = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])
    assert float(pkd_loss(s, t)) == pytest.approx(0.4**2 + 0.8**2)
    assert float(pkd_loss(s[:, 0] * 10, t[:, 0])) == pytest.approx(0.8)  # scale-free


def test_rkd_distance_on_points_of_a_line_and_scale_invariance():
    teacher = torch.tensor([[0.0], [1.0], [3.0]])  # distances 1, 3, 2: μ = 2
    student = torch.tensor([[0.0], [1.0], [2.0]])  # distances 1, 2, 1: μ = 4/3
    psi_t = [0.5, 1.5, 1.0]
    psi_s = [0.75, 1.5, 0.75]
    expected = sum(huber(a - b) for a, b in zip(psi_s, psi_t, strict=True)) / 3
    assert float(rkd_distance(student, teacher)) == pytest.approx(expected)
    assert float(rkd_distance(7 * student, teacher)) == pytest.approx(expected)
    wide = torch.cat([student, torch.zeros(3, 4)], 1)  # another width, the same relations
    assert float(rkd_distance(wide, teacher)) == pytest.approx(expected)


def test_rkd_angle_on_a_right_triangle_against_collinear_points():
    teacher = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # 90° at A, 45° at B and C
    student = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])  # 0° at A and C, 180° at B
    pairs = [(0.0, 1.0), (math.sqrt(0.5), -1.0), (math.sqrt(0.5), 1.0)]  # (teacher, student)
    expected = sum(huber(s - t) for t, s in pairs) / 3
    assert float(rkd_angle(student, teacher)) == pytest.approx(expected, rel=1e-6)
    assert float(rkd_angle(teacher * 3 + 1, teacher)) == pytest.approx(0.0, abs=1e-7)


def test_similarity_preserving_on_hand_grams():
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # G = I
    student = torch.tensor([[1.0, 1.0], [1.0, 1.0]])  # G rows [1, 1]/√2 once normalised
    r = math.sqrt(0.5)
    expected = 2 * ((1 - r) ** 2 + r**2) / 4
    assert float(similarity_preserving(student, teacher)) == pytest.approx(expected)
    maps = torch.rand(3, 2, 4, 4)
    assert float(similarity_preserving(maps * 5, maps)) == pytest.approx(0.0, abs=1e-7)


def test_pkt_on_hand_conditional_distributions():
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # p rows: [0 1 0] [½ 0 ½]
    student = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])  # q rows: ½ off the diagonal
    assert float(pkt_loss(student, teacher)) == pytest.approx(2 * math.log(2) / 3, rel=1e-5)
    assert float(pkt_loss(teacher * 4, teacher)) == pytest.approx(0.0, abs=1e-6)


def test_dist_against_numpy_pearson():
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    tau, beta, gamma = 2.0, 1.0, 0.5
    ys = torch.softmax(zs / tau, 1).double().numpy()
    yt = torch.softmax(zt / tau, 1).double().numpy()
    inter = np.mean([1 - np.corrcoef(ys[i], yt[i])[0, 1] for i in range(5)])
    intra = np.mean([1 - np.corrcoef(ys[:, j], yt[:, j])[0, 1] for j in range(4)])
    expected = tau**2 * (beta * inter + gamma * intra)
    assert float(dist_loss(zs, zt, tau, beta, gamma)) == pytest.approx(expected, rel=1e-5)
    assert float(dist_loss(zt, zt)) == pytest.approx(0.0, abs=1e-6)


def test_every_loss_trains_the_student_only():
    student = nn.Parameter(torch.randn(4, 3))
    teacher = torch.randn(4, 6)
    for loss in (rkd_distance, rkd_angle, similarity_preserving, pkt_loss):
        student.grad = None
        loss(student, teacher).backward()
        assert student.grad is not None and bool(torch.isfinite(student.grad).all())


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: rkd_distance(torch.rand(1, 3), torch.rand(1, 3)), r"B >= 2"),
        (lambda: rkd_angle(torch.rand(2, 3), torch.rand(2, 3)), r"B >= 3"),
        (lambda: pkt_loss(torch.rand(3, 2), torch.rand(4, 2)), "the same batch size"),
        (lambda: dist_loss(torch.rand(2, 3, 1), torch.rand(2, 3, 1)), r"expected \(B, K\)"),
        (lambda: dist_loss(torch.rand(2, 3), torch.rand(2, 3), 0.0), "expected τ > 0"),
        (lambda: attention_score_mse(torch.rand(2, 3), torch.rand(2, 3)), r"\(B, H, Tq, Tk\)"),
        (lambda: attention_scores(torch.rand(1, 2, 5), torch.rand(1, 2, 5), 2), "a divisor"),
        (lambda: HintRegressor(0, 3), "expected widths >= 1"),
    ],
)
def test_bad_inputs_are_named(call, needle):
    with pytest.raises(ValueError, match=needle):
        call()


def test_tinybert_pair_scores_are_the_logits_of_the_captured_attention():
    """The scores the ``tinybert_attention`` pair compares, softmaxed over the real keys, are
    the attention weights the layer used; the pair is 0 teacher to itself, > 0 otherwise."""
    torch.manual_seed(0)
    teacher = TransformerEncoder(vocab_size=50, padding_idx=0, dim=16, num_layers=1, num_heads=4)
    teacher.eval()
    ids = torch.randint(1, 50, (2, 5))
    lengths = torch.tensor([5, 3])
    ids[1, 3:] = 0
    mask = torch.arange(5)[None] < lengths[:, None]
    with Capture(teacher, {"q": "layers.0.attn"}, kind="qkv") as qkv_cap:
        with Capture(teacher, {"w": "layers.0.attn"}, kind="attention") as att_cap:
            teacher(ids, lengths)
            weights = att_cap.get("w")
        t = qkv_cap.get("q")
    scores = attention_scores(t.q, t.k, t.num_heads)
    torch.testing.assert_close(masked_softmax(scores, mask[:, None, None, :]), weights)
    pair = PAIR_LOSSES.get("tinybert_attention")
    assert float(pair(t, t, mask, SimpleNamespace()).detach()) == 0.0
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        student.layers[0].attn.in_proj.weight.mul_(1.5)
    with Capture(student, {"q": "layers.0.attn"}, kind="qkv") as cap:
        student(ids, lengths)
        s = cap.get("q")
    assert float(pair(t, s, mask, SimpleNamespace()).detach()) > 0
