"""Checks every multi-task model's tests share."""

import torch


def ids(params):
    """The identities of some parameters, as a set."""
    return {id(p) for p in params}


def assert_partition(model, task_names):
    """Shared and per-task parameters are disjoint and together cover the whole model."""
    parts = [ids(model.shared_parameters()), *(ids(model.task_parameters(t)) for t in task_names)]
    assert sum(map(len, parts)) == len(ids(model.parameters())) == len(set().union(*parts))


def fit_loss_ratio(model, tasks, x, labels, steps=25, lr=0.03):
    """The summed task loss after ``steps`` full-batch Adam steps, over the loss before them."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def loss() -> torch.Tensor:
        preds = model(x).preds
        return sum(t.compute_loss(preds[t.name], labels[t.name]) for t in tasks)

    first = loss().item()
    for _ in range(steps):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    return loss().item() / first
