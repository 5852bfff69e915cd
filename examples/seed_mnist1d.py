"""Train the seed note's two models on MNIST-1D and print their test accuracy.

MNIST-1D (Greydanus & Kobak, 2020) is generated here by the ``mnist1d`` package's own
``make_dataset`` with its default arguments (5,000 sequences of length 40, 4,000 train / 1,000
test, seed 42) — never its download. Each sequence is read as 40 steps of one feature.

* ``seed_attn_rnn``: 10-way digit classification.
* ``seed_attn_transfer_mtl``: task 1 (binary) "is the digit >= 5", task 2 (2 classes) "is the
  digit even"; every sample is labelled for one task only, drawn at random (the note's
  ``task_mask``), and each task is scored on all test samples.

Usage: ``python examples/seed_mnist1d.py [--epochs N] [--cell rnn|gru|lstm] [--samples N]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from attnmtl.models import create_model


def load_mnist1d(num_samples: int) -> dict[str, torch.Tensor]:
    """MNIST-1D made locally by the package's published procedure (no download)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    data = make_dataset(args)
    return {
        "x": torch.tensor(data["x"], dtype=torch.float32).unsqueeze(-1),  # (N, 40, 1)
        "y": torch.tensor(data["y"], dtype=torch.long),
        "x_test": torch.tensor(data["x_test"], dtype=torch.float32).unsqueeze(-1),
        "y_test": torch.tensor(data["y_test"], dtype=torch.long),
    }


def batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled index batches covering ``n`` samples once."""
    return list(torch.randperm(n, generator=generator).split(batch_size))


def train_attn_rnn(data: dict[str, torch.Tensor], args: argparse.Namespace) -> float:
    """Digit classification with ``seed_attn_rnn``; returns test accuracy."""
    model = create_model(
        "seed_attn_rnn", input_dim=1, hidden_dim=args.hidden, output_dim=10, cell=args.cell
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        model.train()
        total = 0.0
        for index in batches(len(data["y"]), args.batch_size, generator):
            loss = model.loss(model(data["x"][index]), data["y"][index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
        if (epoch + 1) % args.log_every == 0:
            print(
                f"seed_attn_rnn  epoch {epoch + 1:3d}/{args.epochs}"
                f"  loss {total / len(data['y']):.4f}"
            )
    model.eval()
    with torch.no_grad():
        pred = model(data["x_test"]).argmax(-1)
    return (pred == data["y_test"]).float().mean().item()


def seed_tasks(y: torch.Tensor) -> dict[str, torch.Tensor]:
    """The two binary views of a digit the MTL model learns."""
    return {"task1": (y >= 5).long(), "task2": (y % 2 == 0).long()}


def train_attn_transfer_mtl(
    data: dict[str, torch.Tensor], args: argparse.Namespace
) -> dict[str, float]:
    """Two tasks with one label per sample (task mask); returns each task's test accuracy."""
    model = create_model(
        "seed_attn_transfer_mtl", input_dim=1, hidden_dim=args.hidden, cell=args.cell
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    labels = seed_tasks(data["y"])
    task_mask = torch.randint(1, 3, (len(data["y"]),), generator=generator)  # 1 or 2 per sample
    target = torch.where(task_mask == 1, labels["task1"], labels["task2"])
    for epoch in range(args.epochs):
        model.train()
        sums = {"task1": 0.0, "task2": 0.0}
        for index in batches(len(target), args.batch_size, generator):
            total, losses = model.loss(model(data["x"][index]), target[index], task_mask[index])
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            for task, value in losses.items():
                sums[task] += value.item() * int((task_mask[index] == int(task[-1])).sum())
        if (epoch + 1) % args.log_every == 0:
            counts = {t: int((task_mask == i).sum()) for i, t in enumerate(sums, start=1)}
            shown = "  ".join(f"{t} {sums[t] / max(counts[t], 1):.4f}" for t in sums)
            print(f"seed_attn_transfer_mtl  epoch {epoch + 1:3d}/{args.epochs}  loss {shown}")
    model.eval()
    with torch.no_grad():
        out = model(data["x_test"])
    test = seed_tasks(data["y_test"])
    pred1 = (out.preds["task1"].squeeze(-1) > 0).long()
    pred2 = out.preds["task2"].argmax(-1)
    return {
        "task1": (pred1 == test["task1"]).float().mean().item(),
        "task2": (pred2 == test["task2"]).float().mean().item(),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--hidden", type=int, default=20, help="RNN hidden size (the note's 20)")
    parser.add_argument("--cell", choices=("rnn", "gru", "lstm"), default="rnn")
    parser.add_argument("--samples", type=int, default=5000, help="MNIST-1D samples (80%% train)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=5)
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.samples < 20 or args.batch_size < 1:
        parser.error("--epochs and --batch-size must be >= 1 and --samples >= 20")
    return args


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    start = time.perf_counter()
    data = load_mnist1d(args.samples)
    print(f"MNIST-1D: {len(data['y'])} train / {len(data['y_test'])} test sequences of length 40")
    results = {"seed_attn_rnn digit (10 classes)": train_attn_rnn(data, args)}
    mtl = train_attn_transfer_mtl(data, args)
    results["seed_attn_transfer_mtl task1 (digit >= 5)"] = mtl["task1"]
    results["seed_attn_transfer_mtl task2 (digit even)"] = mtl["task2"]
    table = Table(
        title=f"MNIST-1D test accuracy ({args.cell}, hidden {args.hidden}, {args.epochs} epochs)"
    )
    table.add_column("model / task")
    table.add_column("accuracy", justify="right")
    for name, acc in results.items():
        table.add_row(name, f"{acc:.3f}")
    Console().print(table)
    print(f"total time {time.perf_counter() - start:.0f} s")
    return results


if __name__ == "__main__":
    main()
