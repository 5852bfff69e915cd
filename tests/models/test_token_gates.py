"""Expert models on token ids: the gates read a learned bag of words over the real tokens."""

from __future__ import annotations

import pytest
import torch

from attnmtl.core.tasks import Task
from attnmtl.models import create_model
from attnmtl.models.experts import TOKEN_GATE_WIDTH

TASKS = [Task("a", "multiclass", 3), Task("b", "binary", 1)]
TOKENS = {"vocab_size": 50, "padding_idx": 0, "dim": 8, "num_layers": 1, "num_heads": 2}


@pytest.mark.parametrize("name", ["mmoe", "omoe", "ple", "dselect_k", "adatt"])
def test_gates_read_the_mean_embedding_of_real_tokens(name: str) -> None:
    model = create_model(
        name, tasks=TASKS, input_shape=(6,), layout="sequence", encoder="transformer",
        encoder_options=TOKENS,
    ).eval()  # fmt: skip
    assert model.token_embedding is not None
    assert model.token_embedding.weight.shape == (50, TOKEN_GATE_WIDTH)
    ids = torch.tensor([[5, 9, 7, 0, 0, 0], [3, 4, 0, 0, 0, 0]])
    lengths = torch.tensor([3, 2])
    gate = model.gate_features(ids, lengths)
    expected = model.token_embedding(ids[0, :3]).mean(0)
    torch.testing.assert_close(gate[0], expected)
    other = ids.clone()
    other[:, 4] = 11  # a different token in the padding: the gates do not see it
    torch.testing.assert_close(model.gate_features(other, lengths), gate)
    out = model(ids, lengths)
    assert {t: p.shape[0] for t, p in out.preds.items()} == {"a": 2, "b": 2}
    rows = out.attention["a"]
    torch.testing.assert_close(rows.sum(-1), torch.ones(2))
