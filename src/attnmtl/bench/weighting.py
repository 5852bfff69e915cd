"""Benchmark: the training-step time of every gradient-based strategy against equal weighting.

The reference model is the one LibMTL's speed was measured on: an MLP encoder 64→256→256 with
ReLU, T linear heads to 10 classes, batch 256, cross-entropy, Adam, random data. For each T,
every strategy runs in each gradient mode (``parameters``; ``features`` = at the encoder's
output) with our batched engine, and with the naive engine (one backward pass per task, then
the same combination), all from the same initial weights. One step is a whole training step:
``zero_grad``, forward, the task losses, the strategy's backward, ``optimizer.step()``.

Every variant is timed in the same process in interleaved rounds (each round runs a few steps
of every variant in turn), and the median per-step time over rounds is reported, with its ratio
to equal weighting's median from the same rounds.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from rich.table import Table
from torch import Tensor, nn

from attnmtl.core.output import MultiTaskOutput
from attnmtl.core.tasks import Task
from attnmtl.models.base import MultiTaskModel
from attnmtl.weighting import WEIGHTINGS, StepContext, Weighting, create_weighting
from attnmtl.weighting.gradient import GradientBased

MODES = ("parameters", "features")


class ReferenceMTL(MultiTaskModel):
    """MLP 64→256→256 (ReLU) shared by T linear heads to 10 classes."""

    splits_features = True

    def __init__(self, tasks: Sequence[Task], input_dim: int = 64, hidden: int = 256) -> None:
        super().__init__(tasks)
        self.encoder = nn.Sequential(
            nn.Linear(input_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.heads = nn.ModuleDict({t.name: nn.Linear(hidden, t.out_dim) for t in tasks})

    def task_modules(self, task: str) -> list[nn.Module]:
        return [self.heads[task]]

    def forward(self, inputs: Any, lengths: Tensor | None = None) -> MultiTaskOutput:
        z = self.encoder(inputs)
        branches = self.branch(z)
        return MultiTaskOutput({t: self.heads[t](branches[t]) for t in self.tasks}, {}, z)


def gradient_methods() -> list[str]:
    """Registered gradient-based strategies (``mgda_ub`` is ``mgda`` in features mode)."""
    return [
        name
        for name in WEIGHTINGS.names()
        if issubclass(WEIGHTINGS.get(name), GradientBased) and name != "mgda_ub"
    ]


@dataclass
class Variant:
    """One strategy × mode × engine, with its own copy of the model and optimizer.

    The shared and per-task parameter lists are taken once, as the trainer does.
    """

    key: str
    model: ReferenceMTL
    weighting: Weighting
    optimizer: torch.optim.Optimizer
    shared: list[nn.Parameter] = field(default_factory=list)
    owned: dict[str, list[nn.Parameter]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.shared = self.model.shared_parameters()
        self.owned = {t: self.model.task_parameters(t) for t in self.model.tasks}

    def step(self, x: Tensor, labels: Tensor, tasks: Sequence[str], index: int) -> None:
        """One whole training step."""
        model, weighting = self.model, self.weighting
        self.optimizer.zero_grad(set_to_none=True)
        cut = model.split_features() if weighting.wants_split() else contextlib.nullcontext()
        with cut as split:
            out = model(x)
        losses = {
            t: nn.functional.cross_entropy(out.preds[t], labels[k]) for k, t in enumerate(tasks)
        }
        ctx = StepContext(
            self.shared, out.features, index, 0, task_parameters=self.owned, split=split
        )
        weighting.backward(losses, ctx)
        self.optimizer.step()


def make_variant(
    key: str, name: str, tasks: Sequence[Task], state: dict[str, Tensor], **options: Any
) -> Variant:
    model = ReferenceMTL(tasks)
    model.load_state_dict(state)
    weighting = create_weighting(name, [t.name for t in tasks], **options)
    params = list(model.parameters()) + list(weighting.parameters())
    return Variant(key, model, weighting, torch.optim.Adam(params, lr=1e-3))


def run(
    task_counts: Sequence[int] = (2, 4, 8),
    methods: Sequence[str] | None = None,
    modes: Sequence[str] = MODES,
    batch_size: int = 256,
    rounds: int = 7,
    steps: int = 3,
    warmup: int = 2,
    naive: bool = True,
    threads: int | None = 2,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """Median ms per step for every variant; see the module docstring.

    Returns:
        ``{"<T>": {"equal": {...}, "<method>[:features]": {"ms", "ratio_to_ew", "naive_ms",
        "naive_ratio_to_ew"}}}``.
    """
    names = list(methods) if methods is not None else gradient_methods()
    for name in names:
        if name not in WEIGHTINGS.names() or not issubclass(WEIGHTINGS.get(name), GradientBased):
            choices = ", ".join(gradient_methods())
            raise ValueError(f"method {name!r}; expected a gradient-based strategy: {choices}")
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}; expected one of: {', '.join(MODES)}")
    if threads is not None:
        torch.set_num_threads(threads)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for count in task_counts:
        torch.manual_seed(seed)
        tasks = [Task(f"t{i}", "multiclass", 10) for i in range(count)]
        state = ReferenceMTL(tasks).state_dict()
        x = torch.randn(batch_size, 64)
        labels = torch.randint(0, 10, (count, batch_size))
        variants = [make_variant("equal", "equal", tasks, state)]
        for name in names:
            admitted = getattr(WEIGHTINGS.get(name), "modes", MODES)  # RowWeighting may limit
            for mode in (m for m in modes if m in admitted):
                key = name if mode == "parameters" else f"{name}:features"
                variants.append(make_variant(key, name, tasks, state, mode=mode))
                if naive:
                    variants.append(
                        make_variant(f"naive {key}", name, tasks, state, mode=mode, engine="loop")
                    )
        names_t = [t.name for t in tasks]
        times: dict[str, list[float]] = {v.key: [] for v in variants}
        counter = 0
        for r in range(warmup + rounds):
            for v in variants:
                start = time.perf_counter()
                for _ in range(steps):
                    v.step(x, labels, names_t, counter)
                    counter += 1
                if r >= warmup:
                    times[v.key].append((time.perf_counter() - start) / steps * 1e3)
            if log is not None:
                log(f"T={count}: round {r + 1}/{warmup + rounds}")
        median = {k: statistics.median(v) for k, v in times.items()}
        ew = median["equal"]
        table: dict[str, dict[str, float]] = {"equal": {"ms": ew, "ratio_to_ew": 1.0}}
        for key, ms in median.items():
            if key == "equal" or key.startswith("naive "):
                continue
            entry = {"ms": ms, "ratio_to_ew": ms / ew}
            if naive:
                entry["naive_ms"] = median[f"naive {key}"]
                entry["naive_ratio_to_ew"] = median[f"naive {key}"] / ew
            table[key] = entry
        results[str(count)] = table
    return results


def render(results: dict[str, dict[str, dict[str, float]]]) -> Table:
    """One row per T and variant: ms per step, × equal weighting, naive ms and ×."""
    table = Table(title="Training step time, gradient-based weighting (median ms)")
    for column in ("T", "method", "ms", "× EW", "naive ms", "naive × EW"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for count, entries in results.items():
        for key, entry in entries.items():
            naive_ms = entry.get("naive_ms")
            table.add_row(
                count,
                key,
                f"{entry['ms']:.2f}",
                f"{entry['ratio_to_ew']:.2f}",
                "" if naive_ms is None else f"{naive_ms:.2f}",
                "" if naive_ms is None else f"{entry['naive_ratio_to_ew']:.2f}",
            )
            count = ""
    return table
