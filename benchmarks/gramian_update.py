"""The gramian engine's update against the batched engine's, at scale.

One training step of each from the same weights on the reference MLP scaled to ``--params``
shared parameters (``attnmtl bench weighting --params`` measures their memory); prints the
relative difference of the whole shared gradient.

    python benchmarks/gramian_update.py --params 10000000 --tasks 8
"""

from __future__ import annotations

import argparse

import torch

from attnmtl.bench.weighting import ReferenceMTL, width_for
from attnmtl.core.tasks import Task
from attnmtl.weighting import create_weighting
from attnmtl.weighting.base import StepContext


def compare(
    params: int, count: int, depth: int = 4, batch: int = 256, method: str = "upgrad"
) -> float:
    """‖d_gramian − d_batched‖ / ‖d_batched‖ over the shared parameters, one step."""
    tasks = [Task(f"t{i}", "multiclass", 10) for i in range(count)]
    torch.manual_seed(0)
    model = ReferenceMTL(tasks, hidden=width_for(params, depth), depth=depth)
    x, labels = torch.randn(batch, 64), torch.randint(0, 10, (count, batch))
    updates = []
    for engine in ("batched", "gramian"):
        model.zero_grad(set_to_none=True)
        weighting = create_weighting(method, [t.name for t in tasks], engine=engine)
        with model.split_features() as split, weighting.capture(model):
            out = model(x)
        losses = {
            t.name: torch.nn.functional.cross_entropy(out.preds[t.name], labels[k])
            for k, t in enumerate(tasks)
        }
        weighting.backward(losses, StepContext.from_model(model, out, 0, 0, split=split))
        updates.append(torch.cat([p.grad.flatten() for p in model.shared_parameters()]))
    batched, gramian = updates
    return float((gramian - batched).norm() / batched.norm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=10_000_000)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--method", default="upgrad")
    args = parser.parse_args()
    torch.set_num_threads(2)
    diff = compare(args.params, args.tasks, args.depth, method=args.method)
    print(
        f"{args.method}, ~{args.params:,} shared parameters, T = {args.tasks}: "
        f"relative difference of the updates {diff:.2e}"
    )


if __name__ == "__main__":
    main()
