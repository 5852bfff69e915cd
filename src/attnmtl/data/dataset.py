"""An in-memory multi-task data set with a label mask per task, and its batching.

Axes: N samples, B batch, T time, F features, C channels, K tasks.

All tensors live in memory; a batch is one fancy-indexing gather per tensor, so the training
loop does no per-sample Python work (no ``__getitem__`` + collate per sample, as a
``DataLoader`` over a map-style data set would).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from attnmtl.core.batch import Batch, Inputs
from attnmtl.core.tasks import Task

Layout = Literal["sequence", "image", "table"]
Augment = Callable[[Batch, torch.Generator], Batch]
LAYOUTS = ("sequence", "image", "table")


def _gather(inputs: Inputs, index: Tensor) -> Inputs:
    if isinstance(inputs, Tensor):
        return inputs[index]
    return {k: v[index] for k, v in inputs.items()}


def _first(inputs: Inputs) -> Tensor:
    return inputs if isinstance(inputs, Tensor) else next(iter(inputs.values()))


class MultiTaskDataset:
    """Inputs, per-task labels and per-task label masks of N samples.

    Args:
        inputs: (N, T, F) sequences (``layout='sequence'``), (N, C, *S) images
            (``'image'``), (N, F) rows (``'table'``), or a dict of such tensors.
        labels: task name → labels of all N samples in the task's convention; entries of
            unlabelled samples may hold any finite filler.
        tasks: the tasks, in order; their names are the keys of ``labels``.
        label_mask: task name → (N,) bool, True where labelled; default all True.
        lengths: (N,) real lengths of right-padded sequences.
        layout: how to read ``inputs`` (see above).
        meta: extra per-sample tensors (N, ...) kept aligned through subsets, e.g. the
            transform parameters that generated each sample.
        anchors: regression task → (N, 2) per-sample ``(c, s)`` its labels are relative to:
            ``c + s · label`` is the natural value (:mod:`attnmtl.data.windows`).
        augment: ``augment(batch, generator)`` → the batch randomly transformed, applied by
            the Trainer to training batches only (e.g. dense scenes' random scale-crop and
            flip, :class:`~attnmtl.data.dense_sets.SceneAugment`); kept through subsets.
    """

    def __init__(
        self,
        inputs: Inputs,
        labels: Mapping[str, Tensor],
        tasks: Sequence[Task],
        label_mask: Mapping[str, Tensor] | None = None,
        lengths: Tensor | None = None,
        layout: Layout = "sequence",
        meta: Mapping[str, Tensor] | None = None,
        anchors: Mapping[str, Tensor] | None = None,
        augment: Augment | None = None,
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout={layout!r}; expected one of: {', '.join(LAYOUTS)}")
        self.tasks: dict[str, Task] = {t.name: t for t in tasks}
        if len(self.tasks) != len(tasks) or not tasks:
            raise ValueError(f"task names {[t.name for t in tasks]}; expected distinct names")
        if set(labels) != set(self.tasks):
            raise ValueError(
                f"labels for tasks {sorted(labels)}; expected exactly {sorted(self.tasks)}"
            )
        n = _first(inputs).shape[0]
        if not isinstance(inputs, Tensor) and any(v.shape[0] != n for v in inputs.values()):
            raise ValueError("input arrays have different numbers of samples")
        self.inputs = inputs
        self.layout = layout
        self.labels = {name: labels[name] for name in self.tasks}
        mask = dict(label_mask or {})
        self.label_mask = {
            name: mask.get(name, torch.ones(n, dtype=torch.bool)).to(torch.bool)
            for name in self.tasks
        }
        self.lengths = lengths
        self.meta = dict(meta or {})
        self.anchors = dict(anchors or {})
        self.augment = augment
        for name, anchor in self.anchors.items():
            if name not in self.tasks or self.tasks[name].kind != "regression":
                raise ValueError(f"anchors for {name!r}; expected regression tasks only")
            if anchor.shape != (n, 2):
                raise ValueError(
                    f"anchors of task {name!r} have shape {tuple(anchor.shape)}; expected ({n}, 2)"
                )
        for name, task in self.tasks.items():
            if self.label_mask[name].shape != (n,):
                raise ValueError(
                    f"label_mask of task {name!r} has shape "
                    f"{tuple(self.label_mask[name].shape)}; expected ({n},)"
                )
            task.check_labels(self.labels[name], self.label_mask[name])
        for name, value in [("lengths", lengths), *self.meta.items()]:
            if value is not None and value.shape[0] != n:
                raise ValueError(f"{name} has {value.shape[0]} rows; expected {n}")

    def __len__(self) -> int:
        return int(_first(self.inputs).shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample's input (of the first array when inputs is a dict)."""
        return tuple(_first(self.inputs).shape[1:])

    @property
    def input_dim(self) -> int:
        """Features per step (sequence), channels (image) or columns (table)."""
        shape = self.input_shape
        return shape[-1] if self.layout in ("sequence", "table") else shape[0]

    def label_counts(self) -> dict[str, int]:
        """Labelled samples per task."""
        return {name: int(m.sum()) for name, m in self.label_mask.items()}

    def subset(self, index: Tensor) -> MultiTaskDataset:
        """The samples at ``index`` (a long or bool tensor), as a new data set."""
        return MultiTaskDataset(
            _gather(self.inputs, index),
            {k: v[index] for k, v in self.labels.items()},
            list(self.tasks.values()),
            {k: v[index] for k, v in self.label_mask.items()},
            None if self.lengths is None else self.lengths[index],
            self.layout,
            {k: v[index] for k, v in self.meta.items()},
            {k: v[index] for k, v in self.anchors.items()},
            self.augment,
        )

    def only_tasks(self, names: Sequence[str]) -> MultiTaskDataset:
        """The same samples with the tasks ``names`` only (their labels, masks and anchors, in
        that order), the augmentation kept."""
        unknown = [t for t in names if t not in self.tasks]
        if unknown or not names:
            raise ValueError(f"tasks {list(names)!r}; expected some of: {', '.join(self.tasks)}")
        return MultiTaskDataset(
            self.inputs,
            {t: self.labels[t] for t in names},
            [self.tasks[t] for t in names],
            {t: self.label_mask[t] for t in names},
            self.lengths,
            self.layout,
            self.meta,
            {t: a for t, a in self.anchors.items() if t in names},
            self.augment,
        )

    def with_label_mask(self, label_mask: Mapping[str, Tensor]) -> MultiTaskDataset:
        """The same samples with ``label_mask`` and-ed into the existing masks."""
        return MultiTaskDataset(
            self.inputs,
            self.labels,
            list(self.tasks.values()),
            {
                k: self.label_mask[k] & label_mask[k] if k in label_mask else self.label_mask[k]
                for k in self.tasks
            },
            self.lengths,
            self.layout,
            self.meta,
            self.anchors,
            self.augment,
        )

    def one_task_per_sample(self, seed: int = 0) -> MultiTaskDataset:
        """Keep one label per sample: the seed note's ``task_mask`` case.

        Each sample keeps exactly one of the tasks it is labelled for, drawn uniformly (with
        ``seed``) among them; a sample labelled for no task stays unlabelled.
        """
        names = list(self.tasks)
        labelled = torch.stack([self.label_mask[k] for k in names], 1)  # (N, K)
        gen = torch.Generator().manual_seed(seed)
        score = torch.rand(labelled.shape, generator=gen).masked_fill(~labelled, -1.0)
        chosen = score.argmax(1)  # (N,)
        keep = torch.nn.functional.one_hot(chosen, len(names)).bool() & labelled
        return self.with_label_mask({k: keep[:, i] for i, k in enumerate(names)})

    def batch(self, index: Tensor) -> Batch:
        """The samples at ``index`` as one :class:`Batch` (one gather per tensor)."""
        return Batch(
            _gather(self.inputs, index),
            {k: v[index] for k, v in self.labels.items()},
            {k: v[index] for k, v in self.label_mask.items()},
            None if self.lengths is None else self.lengths[index],
            index if index.dtype != torch.bool else index.nonzero().squeeze(1),
            {k: v[index] for k, v in self.anchors.items()},
        )

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator[Batch]:
        """Mini-batches over the whole data set (shuffled with ``generator`` if asked)."""
        for index in batch_indices(len(self), batch_size, shuffle, generator, drop_last):
            yield self.batch(index)

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        """How many batches :meth:`batches` yields."""
        n = len(self)
        return n // batch_size if drop_last else -(-n // batch_size)


def batch_indices(
    n: int,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> list[Tensor]:
    """Index tensors of consecutive mini-batches over ``n`` samples."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}; expected >= 1")
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    parts = list(order.split(batch_size))
    if drop_last and parts and len(parts[-1]) < batch_size:
        parts.pop()
    return parts


@dataclass
class DataSplits:
    """The train, validation and test parts of one data set."""

    train: MultiTaskDataset
    val: MultiTaskDataset
    test: MultiTaskDataset
    info: dict[str, object] = field(default_factory=dict)

    @property
    def tasks(self) -> dict[str, Task]:
        """The tasks (shared by all splits)."""
        return self.train.tasks

    def items(self) -> list[tuple[str, MultiTaskDataset]]:
        """(name, data set) for train, val, test."""
        return [("train", self.train), ("val", self.val), ("test", self.test)]

    def only_tasks(self, names: Sequence[str]) -> DataSplits:
        """Every split with the tasks ``names`` only (:meth:`MultiTaskDataset.only_tasks`)."""
        return DataSplits(
            self.train.only_tasks(names),
            self.val.only_tasks(names),
            self.test.only_tasks(names),
            self.info,
        )
