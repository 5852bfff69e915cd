"""examples/own_encoder.py: a user's nn.GRU as attention_mtl's shared encoder, two tasks, a
weighting's one-call step. Under every weighting method every parameter (the GRU's, each
task's attention and head, the strategy's) gets a gradient and every task's loss falls."""

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from attnmtl.weighting import list_weightings

EXAMPLE = Path(__file__).parents[2] / "examples" / "own_encoder.py"
spec = importlib.util.spec_from_file_location("own_encoder", EXAMPLE)
own_encoder = importlib.util.module_from_spec(spec)
spec.loader.exec_module(own_encoder)


@pytest.mark.parametrize("method", list_weightings())
def test_every_parameter_learns_and_every_task_loss_falls(method, monkeypatch):
    grads: dict[str, bool] = {}
    original = torch.optim.Adam.step

    def step(self, *args, **kwargs):  # which parameters had a gradient at some update
        for group in self.param_groups:
            for p in group["params"]:
                seen = p.grad is not None and bool(p.grad.abs().sum() > 0)
                grads[id(p)] = grads.get(id(p), False) or seen
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    model, history = own_encoder.main(["--weighting", method, "--steps", "40"])
    assert isinstance(model.encoder.encoder, nn.GRU)
    silent = [n for n, p in model.named_parameters() if not grads.get(id(p))]
    assert not silent, f"{method}: never a gradient for {silent}"
    for task, (first, last) in history.items():  # on the whole training set
        assert last < first, (method, task, first, last)
