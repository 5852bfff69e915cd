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
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from attnmtl.core.batch import Batch
from attnmtl.core.output import MultiTaskOutput
from attnmtl.core.tasks import Task
from attnmtl.data.dataset import MultiTaskDataset
from attnmtl.encoders.pooling import lengths_to_mask
from attnmtl.run.build import load_run_model
from attnmtl.run.config import LogitTransfer, TaskTeacher, TransferConfig, TransferPair
from attnmtl.transfer.capture import QKV, Capture
from attnmtl.transfer.losses import attention_kl, logit_distillation
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


@dataclass
class TeacherTerms:
    """One frozen teacher and its terms.

    Attributes:
        where: its config section (``transfer`` or ``transfer.teachers.TASK``), for errors.
        task: the task whose labelled samples its terms are taken on (None: every sample).
        model: the teacher; ``capture``: its records at the pairs' teacher paths.
        pairs: pair name (unique across teachers) → pair.
        logits: the logit distillation options; ``logit_tasks``: the tasks distilled.
        anneal: BAM's teacher annealing of ``task``'s loss.
        cache: its records and predictions per training sample, when cached.
    """

    where: str
    task: str | None
    model: nn.Module
    capture: Capture
    pairs: dict[str, TransferPair]
    logits: LogitTransfer
    logit_tasks: list[str] = field(default_factory=list)
    anneal: bool = False
    cache: TeacherCache | None = None
    qkv_heads: dict[str, int] = field(default_factory=dict)

    def close(self) -> None:
        self.capture.close()


class TransferObjective:
    """Computes the configured transfer terms for a student's forward pass.

    Args:
        config: the ``transfer:`` section.
        student: the model being trained (its capture hooks stay on until :meth:`close`).
        tasks: the student's tasks.
        device: where the teachers run.

    Call :meth:`begin` before each student forward pass and the object after it; with
    annealed teachers, :meth:`anneal` then mixes their soft targets into the task losses.
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
        for task in config.teachers:
            if task not in self.tasks:
                raise ValueError(
                    f"transfer.teachers: unknown task {task!r}; expected one of: "
                    f"{', '.join(self.tasks)}"
                )
        self.train_size = 0  # samples of the data set the batches come from (for the cache)
        self.device = torch.device(device)
        self.slots: list[TeacherTerms] = []
        self.last_preds: dict[str, tuple[Tensor, Tensor]] = {}  # task → (rows, teacher preds)
        # (config section, the task it teaches or None for every task, its spec) per teacher;
        # transfer.teacher is the every-task case of a TaskTeacher
        specs: list[tuple[str, str | None, TaskTeacher]] = [
            (f"transfer.teachers.{task}", task, spec) for task, spec in config.teachers.items()
        ]
        if config.teacher is not None:
            every_task = TaskTeacher(
                teacher=config.teacher,
                checkpoint=config.checkpoint,
                pairs=config.pairs,
                logits=config.logits,
            )
            specs.insert(0, ("transfer", None, every_task))
        named = [
            {f"{where}.pair{i}": pair for i, pair in enumerate(spec.pairs)}
            for where, _, spec in specs
        ]
        every = {name: pair for names in named for name, pair in names.items()}
        kinds = {name: CAPTURE_KIND[pair.loss] for name, pair in every.items()}
        # One hook per (student module, kind): pairs that read the same record share it (two
        # attention hooks on one module would each rewrite its call).
        first: dict[tuple[str, str], str] = {}
        self.student_record = {
            n: first.setdefault((p.student, kinds[n]), n) for n, p in every.items()
        }
        hooked = sorted(set(self.student_record.values()))
        self.student_capture = Capture(
            student, {n: every[n].student for n in hooked}, {n: kinds[n] for n in hooked}
        )
        self.student_capture.active = False  # on only for training forward passes (begin)
        try:
            for (where, owner, spec), pairs in zip(specs, named, strict=True):
                if spec.anneal and self.tasks[str(owner)].is_dense:
                    raise ValueError(
                        f"{where}.anneal mixes soft targets into a per-sample task's loss; "
                        f"{owner!r} is a per-pixel task"
                    )
                eager = any(kinds[n] == "attention" for n in pairs)
                teacher = load_teacher(spec.teacher, spec.checkpoint, device, eager=eager)
                slot = TeacherTerms(
                    where,
                    owner,
                    teacher,
                    Capture(
                        teacher,
                        {n: p.teacher or p.student for n, p in pairs.items()},
                        {n: kinds[n] for n in pairs},
                    ),
                    pairs,
                    spec.logits,
                    anneal=spec.anneal,
                    cache=TeacherCache() if config.cache_teacher else None,
                )
                self.slots.append(slot)
                slot.logit_tasks = self._logit_tasks(slot, spec.teacher)
        except Exception:
            self.close()
            raise

    @property
    def teacher(self) -> nn.Module | None:
        """The teacher of ``transfer.teacher`` (the first one with ``transfer.teachers``)."""
        return self.slots[0].model if self.slots else None

    def _logit_tasks(self, slot: TeacherTerms, spec: str) -> list[str]:
        """The tasks whose predictions ``slot``'s teacher distils (or anneals)."""
        if slot.logits.weight == 0 and not slot.anneal:
            return []
        teacher_tasks = getattr(slot.model, "tasks", None)
        if not isinstance(teacher_tasks, dict):
            raise ValueError(
                f"{slot.where}.logits needs a teacher with task outputs; {spec!r} "
                "has none (a pretrained encoder): set its logits.weight=0"
            )
        shared = [t for t in self.tasks if t in teacher_tasks and teacher_tasks[t] == self.tasks[t]]
        if slot.task is not None and slot.task not in shared:
            raise ValueError(
                f"{slot.where}: the teacher {spec!r} has no task {slot.task!r} like the "
                f"student's (its tasks: {', '.join(sorted(teacher_tasks))}; same name, kind and "
                "size needed for logits or anneal)"
            )
        if not shared:
            raise ValueError(
                f"{slot.where}.logits: the teacher's tasks {sorted(teacher_tasks)} share none "
                f"with the student's {sorted(self.tasks)} (same name, kind and size needed)"
            )
        default = shared if slot.task is None else [slot.task]
        chosen = slot.logits.tasks
        if chosen is None:
            return default
        unknown = [t for t in chosen if t not in shared]
        if unknown or not chosen:
            raise ValueError(
                f"{slot.where}.logits.tasks={chosen!r}; expected some of the tasks the teacher "
                f"and the student share: {', '.join(shared)}"
            )
        return [t for t in shared if t in chosen]

    def begin(self) -> None:
        """Record the next student forward pass (call before it), forgetting the last one."""
        self.student_capture.clear()
        self.student_capture.active = True

    def __call__(self, output: MultiTaskOutput, batch: Batch) -> dict[str, Tensor]:
        """name → weighted term, for the student ``output`` of ``batch``."""
        self.student_capture.active = False
        self.last_preds = {}
        terms: dict[str, Tensor] = {}
        # real steps over the batch's full width (records span it, not just the longest sample)
        width = batch.inputs.shape[1] if isinstance(batch.inputs, Tensor) else None
        mask = padding_mask(batch, width) if width is not None else None
        for slot in self.slots:
            rows = None if slot.task is None else batch.label_mask[slot.task].nonzero()[:, 0]
            if rows is not None and rows.numel() == 0:
                continue  # no sample of its task in this batch
            part = batch if rows is None else batch.rows(rows)
            records, preds = self.teacher_outputs(slot, part)
            prefix = "" if slot.task is None else f"{slot.task}/"
            part_mask = mask if mask is None or rows is None else mask[rows]
            for name, pair in slot.pairs.items():
                student = take(self.student_capture.get(self.student_record[name]), rows)
                loss = pair_loss(pair, records[name], student, part_mask)
                terms[f"{prefix}{pair.loss}:{pair.student}"] = pair.weight * loss
            logit_loss = LOGIT_LOSSES.get(slot.logits.loss)
            for task in slot.logit_tasks:
                mine = output.preds[task] if rows is None else output.preds[task][rows]
                if slot.logits.weight > 0:
                    loss = logit_loss(mine, preds[task], self.tasks[task].kind, slot.logits)
                    terms[f"{prefix}logits:{task}"] = slot.logits.weight * loss
                if slot.anneal and task == slot.task:
                    assert rows is not None
                    self.last_preds[task] = rows, preds[task]
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

    def anneal(
        self,
        losses: dict[str, Tensor],
        output: MultiTaskOutput,
        batch: Batch,
        progress: float,
    ) -> dict[str, Tensor]:
        """BAM's teacher annealing: each annealed task's loss on its labelled samples becomes
        λ·L(gold) + (1 − λ)·L(teacher at temperature 1), λ = ``progress`` in [0, 1] (the
        share of training done). Other tasks' losses are returned as they are."""
        if not self.last_preds:
            return losses
        mixed = dict(losses)
        lam = min(max(progress, 0.0), 1.0)
        for task, (rows, teacher) in self.last_preds.items():
            if task not in losses:
                continue
            soft = logit_distillation(
                output.preds[task][rows], teacher, self.tasks[task].kind, temperature=1.0
            )
            mixed[task] = lam * losses[task] + (1 - lam) * soft
        return mixed

    def teacher_outputs(
        self, slot: TeacherTerms, batch: Batch
    ) -> tuple[dict[str, object], dict[str, Tensor]]:
        """``slot``'s teacher's records (pair name → record) and predictions on ``batch``."""
        cache = slot.cache if batch.index is not None and self.train_size else None
        if cache is not None:
            assert batch.index is not None
            hit = cache.lookup(batch.index)
            if hit is not None:
                return self._unflatten(slot, {k: v.to(self.device) for k, v in hit.items()})
        slot.capture.clear()
        with torch.no_grad():
            taught = slot.model(batch.inputs, batch.lengths)
        records = {name: slot.capture.get(name) for name in slot.pairs}
        for name, record in records.items():
            if isinstance(record, QKV):
                slot.qkv_heads[name] = record.num_heads
        preds = {t: taught.preds[t].detach() for t in slot.logit_tasks}
        if cache is not None:
            assert batch.index is not None
            cache.put(batch.index, TeacherCache.flatten(records, preds), self.train_size)
        return records, preds

    def _unflatten(
        self, slot: TeacherTerms, flat: Mapping[str, Tensor]
    ) -> tuple[dict[str, object], dict[str, Tensor]]:
        records: dict[str, object] = {}
        for name, pair in slot.pairs.items():
            if CAPTURE_KIND[pair.loss] == "qkv":
                heads = slot.qkv_heads[name]
                records[name] = QKV(flat[f"{name}:q"], flat[f"{name}:k"], flat[f"{name}:v"], heads)
            else:
                records[name] = flat[name]
        preds = {t: flat[f"pred:{t}"] for t in slot.logit_tasks}
        return records, preds

    def check(self, model: nn.Module, train: MultiTaskDataset) -> None:
        """Try every term on a few training samples (the model in eval mode, no gradient), so
        a module path that never runs or a teacher that does not fit the data fails now, in one
        line, before a run directory exists. Sets :attr:`train_size` for the teacher cache."""
        self.train_size = len(train)
        probe = train.batch(self.probe_rows(train))
        probe.index = None  # not a training step: nothing goes into the teacher cache
        probe = probe.to(self.device)
        mode = model.training
        model.eval()
        try:
            self.begin()
            with torch.no_grad():
                output = model(probe.inputs, probe.lengths)
                self(output, probe)
                self.last_preds = {}
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

    def probe_rows(self, train: MultiTaskDataset) -> Tensor:
        """Two training samples, plus one labelled sample of each per-task teacher's task."""
        rows = list(range(min(2, len(train))))
        for slot in self.slots:
            if slot.task is not None:
                labelled = train.label_mask[slot.task].nonzero()[:, 0]
                if labelled.numel():
                    rows.append(int(labelled[0]))
        return torch.tensor(sorted(set(rows)))

    def close(self) -> None:
        """Remove every capture hook."""
        self.student_capture.close()
        for slot in self.slots:
            slot.close()


def take(record: object, rows: Tensor | None) -> object:
    """A captured record (a tensor or :class:`QKV`) of the samples at ``rows`` (all: None)."""
    if rows is None:
        return record
    if isinstance(record, QKV):
        return QKV(record.q[rows], record.k[rows], record.v[rows], record.num_heads)
    assert isinstance(record, Tensor)
    return record[rows]


def load_teacher(
    spec: str,
    checkpoint: str = "best",
    device: torch.device | str = "cpu",
    eager: bool = False,
) -> nn.Module:
    """The frozen teacher ``spec``: a run directory, or ``hf:NAME_OR_FOLDER``.

    A run directory's model is returned as is (capture paths are its own; LoRA adapters merged);
    with ``eager``, a pretrained encoder inside it (``encoder: hf``) computes its attention
    explicitly, so that its weights can be captured. A Hugging Face model is wrapped in
    :class:`~attnmtl.transfer.teacher.HFTeacher` (eager), whose capture paths start with
    ``model.``.
    """
    if spec.startswith("hf:"):
        model: nn.Module = HFTeacher(load_pretrained(spec[3:]))
    else:
        model = load_run_model(spec, checkpoint)
        for module in model.modules() if eager else ():
            switch = getattr(module, "set_attention", None)
            if callable(switch):
                switch("eager")
    return freeze(model.to(device))
