"""The multi-task objective: each task's loss over the samples labelled for it.

Axes: B batch, N labelled samples of one task, K tasks.

A task's loss is the mean over its labelled samples in the batch (a per-pixel task's: over the
valid pixels of those samples, :mod:`attnmtl.core.dense`). A task with no labelled sample (or
no valid pixel) contributes nothing that step: it is absent from the returned dict — not a zero
that still carries a graph, and not the NaN that a mean over zero samples gives. Unlabelled
entries of a label tensor are never read (they may hold any filler, even NaN).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from attnmtl.core.batch import Batch
from attnmtl.core.dense import valid_pixels
from attnmtl.core.output import MultiTaskOutput
from attnmtl.core.tasks import Task


def label_counts(batch: Batch, tasks: Mapping[str, Task]) -> list[int]:
    """Labelled samples per task in ``batch``, in ``tasks`` order (one device sync in all)."""
    counts: list[int] = torch.stack([batch.label_mask[name].sum() for name in tasks]).tolist()
    return counts


def task_losses(
    output: MultiTaskOutput,
    batch: Batch,
    tasks: Mapping[str, Task],
    counts: list[int] | None = None,
) -> dict[str, Tensor]:
    """task → mean loss over that task's labelled samples, for the tasks labelled in ``batch``.

    Args:
        output: the model's predictions for every sample of the batch.
        batch: the batch (its ``label_mask`` selects each task's samples).
        tasks: the tasks to score, in order.
        counts: :func:`label_counts` of the batch, if already known.
    """
    counts = label_counts(batch, tasks) if counts is None else counts
    size = len(batch)
    chosen: dict[str, tuple[Tensor, Tensor]] = {}
    for name, count in zip(tasks, counts, strict=True):
        if count == 0:
            continue
        pred, target = output.preds[name], batch.labels[name]
        if count < size:  # select the labelled rows; a full batch needs no gather
            rows = batch.label_mask[name]
            pred, target = pred[rows], target[rows]  # (N, ...)
        chosen[name] = pred, target
    return {
        name: tasks[name].compute_loss(pred, target)
        for name, (pred, target) in with_valid_pixels(chosen, tasks).items()
    }


def with_valid_pixels(
    chosen: Mapping[str, tuple[Tensor, Tensor]], tasks: Mapping[str, Task]
) -> dict[str, tuple[Tensor, Tensor]]:
    """``chosen`` (task → its labelled predictions and targets) without the dense tasks that
    have no valid pixel among them (one device sync, only when there are dense tasks)."""
    dense = [name for name in chosen if tasks[name].is_dense]
    if not dense:
        return dict(chosen)
    valid = torch.stack(
        [valid_pixels(tasks[n].kind, chosen[n][1], tasks[n].ignore_index).sum() for n in dense]
    ).tolist()
    empty = {n for n, v in zip(dense, valid, strict=True) if v == 0}
    return {n: pair for n, pair in chosen.items() if n not in empty}


def part_batches(batch: Batch, parts: int) -> list[Batch]:
    """``parts`` disjoint parts of ``batch``: samples ``i, i + parts, ...`` form part i."""
    if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
        raise ValueError(f"parts={parts!r}; expected an integer >= 1")
    if len(batch) < parts:
        raise ValueError(f"a batch of {len(batch)} samples cannot be split into {parts} parts")
    device = next(iter(batch.label_mask.values())).device
    every = torch.arange(len(batch), device=device)
    return [batch.rows(every[i::parts]) for i in range(parts)]


def part_losses(
    output: MultiTaskOutput, batch: Batch, tasks: Mapping[str, Task], parts: int
) -> list[dict[str, Tensor]]:
    """The task losses of ``parts`` disjoint parts of the batch (samples ``i, i + parts, ...``
    form part i), from the one forward pass: independent estimates of each task's loss, for
    methods that need more than one (MoDo, SDMGrad). A task with no labelled sample in a part
    is absent from that part's dict, as in :func:`task_losses`.
    """
    if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
        raise ValueError(f"parts={parts!r}; expected an integer >= 1")
    size = len(batch)
    if size < parts:
        raise ValueError(f"a batch of {size} samples cannot be split into {parts} parts")
    rows = torch.arange(size, device=batch.label_mask[next(iter(tasks))].device) % parts
    chosen = [[batch.label_mask[name] & (rows == i) for name in tasks] for i in range(parts)]
    counts = torch.stack([m.sum() for part in chosen for m in part]).tolist()  # one sync
    out: list[dict[str, Tensor]] = []
    for i, part in enumerate(chosen):
        picked = {
            name: (output.preds[name][mask], batch.labels[name][mask])
            for k, (name, mask) in enumerate(zip(tasks, part, strict=True))
            if counts[i * len(tasks) + k]
        }
        out.append(
            {
                name: tasks[name].compute_loss(pred, target)
                for name, (pred, target) in with_valid_pixels(picked, tasks).items()
            }
        )
    return out
