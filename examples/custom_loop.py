"""attnmtl's parts in your own training loop: data, model, masked losses, a weighting strategy.

Usage: ``python examples/custom_loop.py [--epochs N] [--samples N] [--weighting dwa]``
"""

from __future__ import annotations

import argparse

import torch

from attnmtl.core import task_losses
from attnmtl.data import create_dataset
from attnmtl.eval import evaluate
from attnmtl.models import create_model
from attnmtl.weighting import create_weighting


def main(argv: list[str] | None = None) -> tuple[list[float], dict[str, dict[str, float]]]:
    """Train; returns the mean training loss (summed over tasks) per epoch and test metrics."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--weighting", default="dwa")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    # MNIST-1D with its digit, where the pattern sits, and its scale as three tasks;
    # every sample labelled for one task only (the seed note's task mask).
    splits = create_dataset("mnist1d-mt", num_train=args.samples, num_val=200, num_test=500)
    train = splits.train.one_task_per_sample(seed=0)
    model = create_model(
        "attention_mtl",  # shared GRU + one attention pooling and one head per task
        tasks=list(splits.tasks.values()),
        input_shape=train.input_shape,
        encoder_options={"cell": "gru", "hidden_dim": 32, "bidirectional": True},
    )
    weighting = create_weighting(args.weighting, list(splits.tasks))
    optimizer = torch.optim.AdamW([*model.parameters(), *weighting.parameters()], lr=5e-3)
    step, history = 0, []
    for epoch in range(args.epochs):
        total, batches = 0.0, 0
        for batch in train.batches(64, shuffle=True):
            output = model(batch.inputs, batch.lengths)  # every task, every sample
            losses = task_losses(output, batch, splits.tasks)  # labelled samples only
            # zero_grad, backward with every shared and task parameter, optimizer step and
            # the strategy's own after-step update, in one call
            weights = weighting.step(
                losses, model, output, optimizer, step=step, epoch=epoch, batch=batch
            )
            step += 1
            total, batches = total + sum(float(v.detach()) for v in losses.values()), batches + 1
        history.append(total / batches)
        rounded = {t: round(float(w), 3) for t, w in weights.items()}
        print(f"epoch {epoch + 1}: loss {history[-1]:.3f}, weights {rounded}")
    results = evaluate(model, splits.test, splits.tasks)
    for task, metrics in results.items():
        print(task, {k: round(v, 4) for k, v in metrics.items()})
    return history, results


if __name__ == "__main__":
    main()
