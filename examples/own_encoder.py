"""Your own encoder (a plain nn.GRU) under attnmtl's per-task attention, heads and weighting.

Usage: ``python examples/own_encoder.py [--weighting mgda] [--steps 60]``
"""

import argparse

import torch
from torch import nn

from attnmtl.core import task_losses
from attnmtl.data import create_dataset
from attnmtl.models import create_model
from attnmtl.weighting import create_weighting


def main(argv: list[str] | None = None) -> tuple[nn.Module, dict[str, tuple[float, float]]]:
    """Train; returns the model and each task's loss on the training set before and after."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weighting", default="mgda")
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    splits = create_dataset("mnist1d-mt", num_train=512, tasks=["digit", "scale"])
    gru = nn.GRU(input_size=1, hidden_size=32, batch_first=True)  # yours: (B, T, 1) -> (B, T, 32)
    model = create_model(
        "attention_mtl",
        tasks=list(splits.tasks.values()),
        input_shape=splits.train.input_shape,
        encoder=gru,
    )
    weighting = create_weighting(args.weighting, list(splits.tasks))
    optimizer = torch.optim.Adam([*model.parameters(), *weighting.parameters()], lr=3e-3)
    every = splits.train.batch(torch.arange(len(splits.train)))
    with torch.no_grad():
        before = task_losses(model(every.inputs), every, splits.tasks)
    for step in range(args.steps):
        batch = splits.train.batch(torch.randint(len(splits.train), (64,)))
        output = model(batch.inputs, batch.lengths)
        losses = task_losses(output, batch, splits.tasks)
        weighting.step(losses, model, output, optimizer, step=step, batch=batch)
    with torch.no_grad():
        after = task_losses(model(every.inputs), every, splits.tasks)
    history = {t: (float(before[t]), float(after[t])) for t in splits.tasks}
    return model, history


if __name__ == "__main__":
    _, losses = main()
    print({task: f"{first:.3f} -> {last:.3f}" for task, (first, last) in losses.items()})
