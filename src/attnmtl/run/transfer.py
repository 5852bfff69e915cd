"""The transfer terms of a training step, built from the run config's ``transfer:`` section.

Axes: B batch, T time, H heads.

Three sources of terms, each weighted and added to the step's objective beside the weighted
task losses:

* **pairs** — teacher → student: the record at a module path of the frozen teacher against
  the record at a module path of the student (attention rows, activations or q/k/v), compared
  by a loss of :mod:`attnmtl.transfer.losses`;
* **logits** — distillation of the teacher's predictions (Hinton et al.'s ``kd``, or DIST) for
  every task the teacher and the student share, on every sample of the batch (labelled or not);
* **cross_task** — inside the student: a target task's attention pulled toward a source
  task's, the source detached by default (the seed note's "feature mapping"): a task with few
  labels borrows where a well-labelled task looks.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from attnmtl.core.batch import Batch
from attnmtl.core.output import MultiTaskOutput
from attnmtl.core.tasks import Task
from attnmtl.data.dataset import MultiTaskDataset
from attnmtl.encoders.pooling import lengths_to_mask
from attnmtl.run.build import load_run_model
from attnmtl.run.config import TransferConfig, TransferPair
from attnmtl.transfer.capture import QKV, Capture
from attnmtl.transfer.losses import attention_kl
from attnmtl.transfer.pairs import CAPTURE_KIND, LOGIT_LOSSES, PAIR_LOSSES
from attnmtl.transfer.teacher import HFTeacher, freeze, load_pretrained


def padding_mask(batch: Batch, steps: int) -> Tensor | None:
    """(B, T) True at real steps, from the batch's lengths (None when all are real)."""
    return None if batch.lengths is None else lengths_to_mask(batch.lengths, steps)


def pair_loss(pair: TransferPair, teacher: object, student: object, mask: Tensor | None) -> Tensor:
    """One pair's loss between the teacher's and the student's records (by its registered
    name, :data:`~attnmtl.transfer.pairs.PAIR_LOSSES`)."""
    return PAIR_LOSSES.get(pair.loss)(teacher, student, mask, pair)


class TeacherCache:
    """A frozen teacher's records and predictions per training sample, on the CPU.

    Filled batch by batch in the first epoch, then read back: the teacher is frozen and in
    eval mode and the data are fixed, so the cached values are the ones it would compute.
    """

    def __init__(self) -> None:
        self.store: dict[str, Tensor] = {}
        self.filled: Tensor | None = None  # (N,) bool

    @staticmethod
    def flatten(records: Mapping[str, object], preds: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """name → tensor (B, ...) for every record field and prediction."""
        flat: dict[str, Tensor] = {f"pred:{t}": p for t, p in preds.items()}
        for name, rec in records.items():
            if isinstance(rec, QKV):
                flat.update({f"{name}:q": rec.q, f"{name}:k": rec.k, f"{name}:v": rec.v})
            else:
                assert isinstance(rec, Tensor)
                flat[name] = rec
        return flat

    def lookup(self, index: Tensor) -> dict[str, Tensor] | None:
        """The cached tensors of samples ``index`` (B,), or None unless all are cached."""
        if self.filled is None or not bool(self.filled[index].all()):
            return None
        return {k: v[index] for k, v in self.store.items()}

    def put(self, index: Tensor, flat: Mapping[str, Tensor], size: int) -> None:
        """Store one batch's tensors (a data set of ``size`` samples)."""
        if self.filled is None:
            self.filled = torch.zeros(size, dtype=torch.bool)
        for key, value in flat.items():
            if key not in self.store:
                self.store[key] = torch.zeros((size, *value.shape[1:]), dtype=value.dtype)
            if self.store[key].shape[1:] != value.shape[1:]:
                raise ValueError(
                    f"transfer.cache_teacher: record {key!r} changed shape from "
                    f"{tuple(self.store[key].shape[1:])} to {tuple(value.shape[1:])} between "
                    "batches (variable padding?); set cache_teacher: false"
                )
            self.store[key][index] = value.detach().cpu()
        self.filled[index] = True


class TransferObjective:
    """Computes the configured transfer terms for a student's forward pass.

    Args:
        config: the ``transfer:`` section.
        student: the model being trained (its capture hooks stay on until :meth:`close`).
        tasks: the student's tasks.
        device: where the teacher runs.

    Call :meth:`begin` before each student forward pass and the object after it.
    """

    def __init__(
        self,
        config: TransferConfig,
        student: nn.Module,
        tasks: Mapping[str, Task],
        device: torch.device | str = "cpu",
    ) -> None:
        self.config, self.tasks = config, dict(tasks)
        for pair in config.cross_task:
            for side in (pair.source, pair.target):
                if side not in self.tasks:
                    raise ValueError(
                        f"transfer.cross_task: unknown task {side!r}; expected one of: "
                        f"{', '.join(self.tasks)}"
                    )
        self.teacher: nn.Module | None = None
        self.cache = TeacherCache() if config.cache_teacher else None
        self.train_size = 0  # samples of the data set the batches come from (for the cache)
        self.qkv_heads: dict[str, int] = {}
        self.device = torch.device(device)
        self.logit_tasks: list[str] = []
        names = {f"pair{i}": pair for i, pair in enumerate(config.pairs)}
        kinds = {name: CAPTURE_KIND[pair.loss] for name, pair in names.items()}
        self.pairs = names
        self.student_capture = Capture(student, {n: p.student for n, p in names.items()}, kinds)
        self.student_capture.active = False  # on only for training forward passes (begin)
        self.teacher_capture: Capture | None = None
        try:
            if config.teacher is not None:
                self.teacher = load_teacher(config.teacher, config.checkpoint, device)
                self.teacher_capture = Capture(
                    self.teacher, {n: p.teacher or p.student for n, p in names.items()}, kinds
                )
                self.logit_tasks = self._logit_tasks()
        except Exception:
            self.close()
            raise

    def _logit_tasks(self) -> list[str]:
        if self.config.logits.weight == 0:
            return []
        teacher_tasks = getattr(self.teacher, "tasks", None)
        if not isinstance(teacher_tasks, dict):
            raise ValueError(
                f"transfer.logits needs a teacher with task outputs; {self.config.teacher!r} "
                "has none (a pretrained encoder): set transfer.logits.weight=0"
            )
        shared = [t for t in self.tasks if t in teacher_tasks and teacher_tasks[t] == self.tasks[t]]
        if not shared:
            raise ValueError(
                f"transfer.logits: the teacher's tasks {sorted(teacher_tasks)} share none with the "
                f"student's {sorted(self.tasks)} (same name, kind and size needed)"
            )
        chosen = self.config.logits.tasks
        if chosen is None:
            return shared
        unknown = [t for t in chosen if t not in shared]
        if unknown or not chosen:
            raise ValueError(
                f"transfer.logits.tasks={chosen!r}; expected some of the tasks the teacher and "
                f"the student share: {', '.join(shared)}"
            )
        return [t for t in shared if t in chosen]

    def begin(self) -> None:
        """Record the next student forward pass (call before it), forgetting the last one."""
        self.student_capture.clear()
        self.student_capture.active = True

    def __call__(self, output: MultiTaskOutput, batch: Batch) -> dict[str, Tensor]:
        """name → weighted term, for the student ``output`` of ``batch``."""
        self.student_capture.active = False
        terms: dict[str, Tensor] = {}
        # real steps over the batch's full width (records span it, not just the longest sample)
        width = batch.inputs.shape[1] if isinstance(batch.inputs, Tensor) else None
        mask = padding_mask(batch, width) if width is not None else None
        if self.teacher is not None:
            records, preds = self.teacher_outputs(batch)
            for name, pair in self.pairs.items():
                loss = pair_loss(pair, records[name], self.student_capture.get(name), mask)
                terms[f"{pair.loss}:{pair.student}"] = pair.weight * loss
            logits = self.config.logits
            logit_loss = LOGIT_LOSSES.get(logits.loss)
            for task in self.logit_tasks:
                loss = logit_loss(output.preds[task], preds[task], self.tasks[task].kind, logits)
                terms[f"logits:{task}"] = logits.weight * loss
        for cross in self.config.cross_task:
            source = output.attention[cross.source]
            source = source.detach() if cross.detach else source
            target = output.attention[cross.target]
            keys = mask if mask is not None and mask.shape[-1] == target.shape[-1] else None
            terms[f"cross:{cross.source}->{cross.target}"] = cross.weight * attention_kl(
                source, target, keys
            )
        self.student_capture.clear()  # the graph holds what backward needs
        return terms

    def teacher_outputs(self, batch: Batch) -> tuple[dict[str, object], dict[str, Tensor]]:
        """The teacher's records (pair name → record) and predictions on ``batch``."""
        assert self.teacher is not None and self.teacher_capture is not None
        cache = self.cache if batch.index is not None and self.train_size else None
        if cache is not None:
            assert batch.index is not None
            hit = cache.lookup(batch.index)
            if hit is not None:
                return self._unflatten({k: v.to(self.device) for k, v in hit.items()})
        self.teacher_capture.clear()
        with torch.no_grad():
            taught = self.teacher(batch.inputs, batch.lengths)
        records = {name: self.teacher_capture.get(name) for name in self.pairs}
        for name, record in records.items():
            if isinstance(record, QKV):
                self.qkv_heads[name] = record.num_heads
        preds = {t: taught.preds[t].detach() for t in self.logit_tasks}
        if cache is not None:
            assert batch.index is not None
            cache.put(batch.index, TeacherCache.flatten(records, preds), self.train_size)
        return records, preds

    def _unflatten(self, flat: Mapping[str, Tensor]) -> tuple[dict[str, object], dict[str, Tensor]]:
        records: dict[str, object] = {}
        for name, pair in self.pairs.items():
            if CAPTURE_KIND[pair.loss] == "qkv":
                heads = self.qkv_heads[name]
                records[name] = QKV(flat[f"{name}:q"], flat[f"{name}:k"], flat[f"{name}:v"], heads)
            else:
                records[name] = flat[name]
        preds = {t: flat[f"pred:{t}"] for t in self.logit_tasks}
        return records, preds

    def check(self, model: nn.Module, train: MultiTaskDataset) -> None:
        """Try every term on two training samples (the model in eval mode, no gradient), so a
        module path that never runs or a teacher that does not fit the data fails now, in one
        line, before a run directory exists. Sets :attr:`train_size` for the teacher cache."""
        self.train_size = len(train)
        probe = train.batch(torch.arange(min(2, len(train))))
        probe.index = None  # not a training step: nothing goes into the teacher cache
        probe = probe.to(self.device)
        mode = model.training
        model.eval()
        try:
            self.begin()
            with torch.no_grad():
                self(model(probe.inputs, probe.lengths), probe)
        except (RuntimeError, IndexError, KeyError) as err:
            self.close()
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            message = f"transfer: the terms do not fit this model and data: {first}"
            raise ValueError(message) from None
        except ValueError:
            self.close()
            raise
        finally:
            model.train(mode)

    def close(self) -> None:
        """Remove every capture hook."""
        self.student_capture.close()
        if self.teacher_capture is not None:
            self.teacher_capture.close()


def load_teacher(
    spec: str, checkpoint: str = "best", device: torch.device | str = "cpu"
) -> nn.Module:
    """The frozen teacher ``spec``: a run directory, or ``hf:NAME_OR_FOLDER``.

    A run directory's model is returned as is (capture paths are its own); a Hugging Face model
    is wrapped in :class:`~attnmtl.transfer.teacher.HFTeacher`, whose capture paths start with
    ``model.``.
    """
    if spec.startswith("hf:"):
        model: nn.Module = HFTeacher(load_pretrained(spec[3:]))
    else:
        model = load_run_model(spec, checkpoint)
    return freeze(model.to(device))
