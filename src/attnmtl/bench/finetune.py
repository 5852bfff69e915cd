"""Benchmark: multi-task fine-tuning speed of a pretrained encoder, one variant per way to tune.

Axes: B batch, T tokens.

Each variant is ``attention_mtl`` on ``encoder: hf`` (all-MiniLM-L6-v2 unless ``model`` names
another folder) with textmt's two tasks (topic, 5 classes; sentiment, 3), trained by AdamW on
random token ids (B, T) with every token real — the shape of a full textmt batch:

* ``full``: every weight trains;
* ``last2``: the last two layers (and the poolings and heads) train;
* ``lora``: LoRA adapters of rank 8 on ``query`` and ``value``;
* ``full+checkpointing``: ``full`` with activation checkpointing (less memory, more compute).

A step is zero_grad, forward, both tasks' cross-entropy, backward and the optimizer step. Rounds
of ``steps`` steps alternate the variants (the order reversed every other round), so machine
noise falls on all of them alike; the medians of samples/s and their ratio to ``full`` are
reported with each variant's trainable parameters.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from rich.table import Table
from torch import nn

from attnmtl.core.tasks import Task
from attnmtl.models import create_model

VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},
    "last2": {"train_layers": 2},
    "lora": {"lora": {"r": 8, "alpha": 16, "target_modules": ["query", "value"]}},
    "full+checkpointing": {"gradient_checkpointing": True},
}
TASKS = [Task("topic", "multiclass", 5), Task("sentiment", "multiclass", 3)]


def check_variants(names: list[str]) -> list[str]:
    """``names`` if each is a known variant, else ValueError naming the first unknown."""
    for name in names:
        if name not in VARIANTS:
            raise ValueError(f"--variants: {name!r}; expected any of: {', '.join(VARIANTS)}")
    return names


def build(variant: str, model: str, seq_len: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The variant's model in training mode and its AdamW."""
    net = create_model(
        "attention_mtl", tasks=TASKS, input_shape=(seq_len,), layout="sequence",
        encoder="hf", encoder_options={"model": model, **VARIANTS[variant]},
    )  # fmt: skip
    net.train()
    trainable = [p for p in net.parameters() if p.requires_grad]
    return net, torch.optim.AdamW(trainable, lr=1e-5)


def run(
    model: str = "minilm",
    variants: list[str] | None = None,
    batch_size: int = 32,
    seq_len: int = 64,
    steps: int = 3,
    rounds: int = 5,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Time every variant (see the module docstring); the results."""
    names = check_variants(variants or list(VARIANTS))
    built = {name: build(name, model, seq_len) for name in names}
    vocab = int(getattr(next(iter(built.values()))[0], "encoder").encoder.vocab_size)  # noqa: B009
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(vocab // 4, vocab, (batch_size, seq_len), generator=gen)  # (B, T)
    lengths = torch.full((batch_size,), seq_len)
    labels = {t.name: torch.randint(t.out_dim, (batch_size,), generator=gen) for t in TASKS}

    def step(name: str) -> float:
        net, optimizer = built[name]
        start = time.perf_counter()
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            preds = net(ids, lengths).preds
            loss = sum(nn.functional.cross_entropy(preds[t], y) for t, y in labels.items())
            loss.backward()  # type: ignore[union-attr]
            optimizer.step()
        return batch_size * steps / (time.perf_counter() - start)

    for name in names:  # warm-up
        step(name)
    timings: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[:: 1 if r % 2 == 0 else -1]:
            timings[name].append(step(name))
        log(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {v[-1]:.1f}" for n, v in timings.items()))
    medians = {name: statistics.median(v) for name, v in timings.items()}
    reference = medians.get("full", next(iter(medians.values())))
    return {
        "model": model,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "steps": steps,
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "samples_per_s": medians,
        "all_samples_per_s": timings,
        "ratio_to_full": {name: value / reference for name, value in medians.items()},
        "trainable": {
            name: sum(p.numel() for p in net.parameters() if p.requires_grad)
            for name, (net, _) in built.items()
        },
    }


def render(results: dict[str, Any]) -> Table:
    """The results as a rich table."""
    table = Table(
        title=f"fine-tuning {results['model']}: batch {results['batch_size']} × "
        f"{results['seq_len']} tokens, {results['threads']} threads, median of "
        f"{results['rounds']} rounds of {results['steps']} steps"
    )
    for column in ("variant", "samples/s", "× full", "trainable parameters"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for name, value in results["samples_per_s"].items():
        table.add_row(
            name,
            f"{value:.1f}",
            f"{results['ratio_to_full'][name]:.2f}",
            f"{results['trainable'][name]:,}",
        )
    return table
