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
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
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
    """MLP 64→256→256 (ReLU) shared by T linear heads to 10 classes (``depth`` hidden layers
    of width ``hidden``; 2 × 256 by default)."""

    splits_features = True

    def __init__(
        self, tasks: Sequence[Task], input_dim: int = 64, hidden: int = 256, depth: int = 2
    ) -> None:
        super().__init__(tasks)
        layers: list[nn.Module] = [nn.Linear(input_dim, hidden), nn.ReLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.ReLU()]
        self.encoder = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({t.name: nn.Linear(hidden, t.out_dim) for t in tasks})

    def task_modules(self, task: str) -> list[nn.Module]:
        return [self.heads[task]]

    def forward(self, inputs: Any, lengths: Tensor | None = None) -> MultiTaskOutput:
        z = self.encoder(inputs)
        branches = self.branch(z)
        return MultiTaskOutput({t: self.heads[t](branches[t]) for t in self.tasks}, {}, z)


def gradient_methods() -> list[str]:
    """Registered strategies the benchmark times: every gradient-based one (``mgda_ub`` is
    ``mgda`` in features mode) and the bilevel ones that look ahead (``auto_lambda``)."""
    return [
        name for name in WEIGHTINGS.names() if timed(WEIGHTINGS.get(name)) and name != "mgda_ub"
    ]


def timed(cls: type[Weighting]) -> bool:
    """Whether the benchmark times strategies of ``cls``."""
    return issubclass(cls, GradientBased) or bool(getattr(cls, "looks_ahead", False))


@dataclass
class Variant:
    """One strategy × mode × engine, with its own copy of the model and optimizer.

    The shared and per-task parameter lists (and the shared layers) are taken once, as the
    trainer does.
    """

    key: str
    model: ReferenceMTL
    weighting: Weighting
    optimizer: torch.optim.Optimizer
    shared: list[nn.Parameter] = field(default_factory=list)
    owned: dict[str, list[nn.Parameter]] = field(default_factory=dict)
    groups: list[list[int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.shared = self.model.shared_parameters()
        self.groups = self.model.shared_groups()
        self.owned = {t: self.model.task_parameters(t) for t in self.model.tasks}

    def losses(
        self, x: Tensor, labels: Tensor, tasks: Sequence[str], grad: bool = True
    ) -> dict[str, Tensor]:
        """The task losses of ``x`` under the current parameters."""
        with torch.set_grad_enabled(grad):
            preds = self.model(x).preds
            return {
                t: nn.functional.cross_entropy(preds[t], labels[k]) for k, t in enumerate(tasks)
            }

    def step(self, x: Tensor, labels: Tensor, tasks: Sequence[str], index: int) -> None:
        """One whole training step."""
        model, weighting = self.model, self.weighting
        self.optimizer.zero_grad(set_to_none=True)
        cut = model.split_features() if weighting.wants_split() else contextlib.nullcontext()
        with cut as split, weighting.capture(model):
            out = model(x)
        losses = {
            t: nn.functional.cross_entropy(out.preds[t], labels[k]) for k, t in enumerate(tasks)
        }
        ctx = StepContext(
            self.shared,
            out.features,
            index,
            0,
            task_parameters=self.owned,
            split=split,
            groups=self.groups,
            parts=lambda n: [
                {
                    t: nn.functional.cross_entropy(out.preds[t][i::n], labels[k][i::n])
                    for k, t in enumerate(tasks)
                }
                for i in range(n)
            ],
            part_forward=lambda n: [self.losses(x[i::n], labels[:, i::n], tasks) for i in range(n)],
            rerun=lambda: self.losses(x, labels, tasks, grad=False),
            heldout=lambda: self.losses(x.flip(0), labels.flip(1), tasks),  # other pairing
            lr=float(self.optimizer.param_groups[0]["lr"]),
            model=model,
        )
        weighting.backward(losses, ctx)
        self.optimizer.step()

        def recompute() -> dict[str, Tensor]:
            with torch.no_grad():
                again = model(x).preds
            return {
                t: nn.functional.cross_entropy(again[t], labels[k]) for k, t in enumerate(tasks)
            }

        weighting.after_step(recompute)  # (GradNorm's update; only FAMO would recompute)


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
        if name not in WEIGHTINGS.names() or not timed(WEIGHTINGS.get(name)):
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
            cls = WEIGHTINGS.get(name)
            admitted = getattr(cls, "modes", MODES)  # RowWeighting may limit
            for mode in (m for m in modes if m in admitted):
                key = name if mode == "parameters" else f"{name}:features"
                if not issubclass(cls, GradientBased):  # bilevel: no mode, no engine
                    variants.append(make_variant(key, name, tasks, state))
                    continue
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
            if naive and f"naive {key}" in median:
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


def width_for(params: int, depth: int, input_dim: int = 64) -> int:
    """The hidden width W whose ``depth``-layer encoder has about ``params`` parameters:
    ``(input_dim + 1) W + (depth − 1)(W + 1) W``."""
    if depth < 1 or params < 1:
        raise ValueError(f"params={params!r}, depth={depth!r}; expected both >= 1")
    a, b = depth - 1, input_dim + 1 + (depth - 1)
    if a == 0:
        return max(1, round(params / b))
    return max(1, round((-b + math.sqrt(b * b + 4 * a * params)) / (2 * a)))


def measure(
    method: str,
    engine: str,
    count: int,
    width: int,
    depth: int,
    batch_size: int,
    steps: int,
    threads: int,
) -> dict[str, float]:
    """Peak resident memory and median step time of one variant, in this process.

    Meant to run alone in a fresh process (:func:`memory`): the peak is the process's.
    SGD, so no optimizer state adds to what the engines need.
    """
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tasks = [Task(f"t{i}", "multiclass", 10) for i in range(count)]
    model = ReferenceMTL(tasks, hidden=width, depth=depth)
    options = {} if method == "equal" else {"engine": engine}
    weighting = create_weighting(method, [t.name for t in tasks], **options)
    variant = Variant(method, model, weighting, torch.optim.SGD(model.parameters(), lr=1e-3))
    x = torch.randn(batch_size, 64)
    labels = torch.randint(0, 10, (count, batch_size))
    names = [t.name for t in tasks]
    times = []
    for index in range(steps + 1):
        start = time.perf_counter()
        variant.step(x, labels, names, index)
        times.append((time.perf_counter() - start) * 1e3)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # bytes (Linux: KiB)
    shared = sum(p.numel() for p in model.shared_parameters())
    return {"peak_bytes": float(peak), "ms": statistics.median(times[1:]), "shared": shared}


def memory(
    params: int,
    depth: int = 4,
    count: int = 8,
    methods: Sequence[str] = ("upgrad",),
    engines: Sequence[str] = ("batched", "gramian", "loop"),
    batch_size: int = 256,
    steps: int = 3,
    threads: int = 2,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Peak memory of each method × engine on the reference MLP scaled to ``params`` shared
    parameters, each variant in a fresh process, against equal weighting's (a plain backward).

    Returns:
        ``{"params", "depth", "width", "tasks", "param_bytes", "equal": {...},
        "<method> (<engine>)": {"peak_bytes", "ms", "extra_bytes", "extra_over_params"}}``:
        ``extra`` is the peak above equal weighting's, and ``extra_over_params`` that over the
        shared parameters' own memory (float32).
    """
    width = width_for(params, depth)
    variants = [("equal", "batched")] + [(m, e) for m in methods for e in engines]
    results: dict[str, Any] = {"depth": depth, "width": width, "tasks": count}
    for method, engine in variants:
        args = [method, engine, count, width, depth, batch_size, steps, threads]
        code = (
            "import json, sys; from attnmtl.bench.weighting import measure; "
            f"print(json.dumps(measure(*{args!r})))"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"{method} ({engine}) failed: {last}")
        entry = json.loads(done.stdout.strip().splitlines()[-1])
        key = "equal" if method == "equal" else f"{method} ({engine})"
        results[key] = entry
        if log is not None:
            log(f"{key}: peak {entry['peak_bytes'] / 2**20:.0f} MiB, {entry['ms']:.0f} ms/step")
    shared = int(results["equal"]["shared"])
    results["params"], results["param_bytes"] = shared, 4 * shared
    base = results["equal"]["peak_bytes"]
    for key, entry in results.items():
        if isinstance(entry, dict) and key != "equal":
            entry["extra_bytes"] = entry["peak_bytes"] - base
            entry["extra_over_params"] = entry["extra_bytes"] / (4 * shared)
    return results


def render_memory(results: Mapping[str, Any]) -> Table:
    """One row per variant: peak memory, memory above equal weighting, × parameter memory."""
    title = (
        f"Peak memory at {results['params']:,} shared parameters "
        f"({results['depth']} layers of {results['width']}), T = {results['tasks']}"
    )
    table = Table(title=title)
    for column in ("variant", "peak MiB", "above EW MiB", "above EW / params", "ms/step"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for key, entry in results.items():
        if not isinstance(entry, dict):
            continue
        extra = entry.get("extra_bytes")
        table.add_row(
            key,
            f"{entry['peak_bytes'] / 2**20:.0f}",
            "" if extra is None else f"{extra / 2**20:.0f}",
            "" if extra is None else f"{entry['extra_over_params']:.2f}",
            f"{entry['ms']:.0f}",
        )
    return table
