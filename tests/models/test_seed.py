"""The seed note's two models: its maths reproduced, its defects gone."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnmtl.models import MultiTaskOutput, SeedAttnRNN, SeedAttnTransferMTL, create_model


def note_attn_rnn_forward(model: SeedAttnRNN, x: torch.Tensor) -> torch.Tensor:
    """The note's AttnRNN.forward, line by line, on the preset's weights."""
    rnn, attn, fc = model.encoder.rnn, model.encoder.pool.scorer, model.head
    h0 = torch.zeros(1, x.size(0), rnn.hidden_size)
    out, _ = rnn(x, h0)
    attn_weights = torch.softmax(attn(out).squeeze(2), dim=1)
    weighted_out = torch.bmm(attn_weights.unsqueeze(1), out).squeeze(1)
    return fc(weighted_out)


def test_attn_rnn_computes_the_notes_forward():
    model = create_model("seed_attn_rnn")
    assert isinstance(model.encoder.rnn, nn.RNN) and model.encoder.rnn.hidden_size == 20
    x = torch.randn(4, 5, 10)
    logits, weights = model(x, return_weights=True)
    torch.testing.assert_close(logits, note_attn_rnn_forward(model, x))
    assert logits.shape == (4, 1) and weights.shape == (4, 5)


def test_attn_rnn_loss_takes_logits():
    model = SeedAttnRNN()
    logits = torch.tensor([[2.0], [-1.0]])
    target = torch.tensor([1, 0])
    expected = (
        -(
            torch.log(torch.sigmoid(torch.tensor(2.0)))
            + torch.log(1 - torch.sigmoid(torch.tensor(-1.0)))
        )
        / 2
    )
    torch.testing.assert_close(model.loss(logits, target), expected)
    multi = SeedAttnRNN(output_dim=3)
    scores = torch.randn(2, 3)
    torch.testing.assert_close(multi.loss(scores, target), F.cross_entropy(scores, target))


def test_transfer_mtl_shares_one_scorer_between_two_rnns():
    model = SeedAttnTransferMTL()
    enc1, enc2 = model.encoders["task1"], model.encoders["task2"]
    assert enc1.rnn is not enc2.rnn
    assert enc1.pool is enc2.pool is model.attention
    out = model(torch.randn(3, 6, 10))
    assert isinstance(out, MultiTaskOutput)
    assert out.preds["task1"].shape == (3, 1) and out.preds["task2"].shape == (3, 2)
    assert out.attention["task1"].shape == (3, 6)
    shared = SeedAttnTransferMTL(shared_encoder=True)
    assert list(shared.encoders) == ["shared"]


def test_loss_is_bce_on_task1_rows_plus_ce_on_task2_rows():
    torch.manual_seed(0)
    model = SeedAttnTransferMTL(input_dim=2, hidden_dim=4)
    out = model(torch.randn(5, 3, 2))
    target = torch.tensor([1, 0, 1, 1, 0])
    task_mask = torch.tensor([1, 2, 2, 1, 1])
    total, losses = model.loss(out, target, task_mask)
    rows1, rows2 = task_mask == 1, task_mask == 2
    bce = F.binary_cross_entropy_with_logits(out.preds["task1"][rows1, 0], target[rows1].float())
    ce = F.cross_entropy(out.preds["task2"][rows2], target[rows2])
    torch.testing.assert_close(losses["task1"], bce)
    torch.testing.assert_close(losses["task2"], ce)
    torch.testing.assert_close(total, bce + ce)


def test_an_absent_task_adds_nothing_and_gets_no_gradient():
    model = SeedAttnTransferMTL(input_dim=2, hidden_dim=4)
    out = model(torch.randn(4, 3, 2))
    total, losses = model.loss(out, torch.tensor([0, 1, 1, 0]), torch.ones(4, dtype=torch.long))
    assert set(losses) == {"task1"}
    total.backward()
    assert all(p.grad is None for p in model.heads["task2"].parameters())
    assert all(p.grad is None for p in model.encoders["task2"].rnn.parameters())
    assert all(torch.isfinite(p.grad).all() for p in model.heads["task1"].parameters())
    with pytest.raises(ValueError, match="task_mask"):
        model.loss(out, torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize("shared_encoder", [False, True])
def test_shared_and_task_parameters_partition_the_model(shared_encoder):
    model = SeedAttnTransferMTL(shared_encoder=shared_encoder)
    groups = [
        model.shared_parameters(),
        model.task_parameters("task1"),
        model.task_parameters("task2"),
    ]
    ids = [id(p) for group in groups for p in group]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters()}
    with pytest.raises(ValueError, match="task3"):
        model.task_parameters("task3")


def test_hidden_state_follows_the_input_device_and_dtype():
    model = SeedAttnRNN(input_dim=3).double()
    assert model(torch.randn(2, 4, 3, dtype=torch.float64)).dtype == torch.float64
