"""The bottom layer: the types every other part speaks, and nothing heavy.

:class:`Batch` and :data:`Inputs` (what a data set hands a model), :class:`Task` and the masked
per-task losses (:func:`task_losses`), :class:`MultiTaskOutput` (what a model returns), the
torchrun job handle (:mod:`attnmtl.core.distributed`), the name → factory :class:`Registry` and
the one atomic file writer (:mod:`attnmtl.core.io`). It imports torch and the standard library
only.
"""

from attnmtl.core.batch import Batch, Inputs, move_inputs
from attnmtl.core.distributed import Distributed
from attnmtl.core.io import write_json_atomic, write_text_atomic
from attnmtl.core.losses import label_counts, part_batches, part_losses, task_losses
from attnmtl.core.output import MultiTaskOutput
from attnmtl.core.registry import Registry
from attnmtl.core.tasks import TASK_KINDS, Task

__all__ = [
    "TASK_KINDS",
    "Batch",
    "Distributed",
    "Inputs",
    "MultiTaskOutput",
    "Registry",
    "Task",
    "label_counts",
    "move_inputs",
    "part_batches",
    "part_losses",
    "task_losses",
    "write_json_atomic",
    "write_text_atomic",
]
