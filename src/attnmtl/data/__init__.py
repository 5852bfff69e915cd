"""Multi-task data: the in-memory data set, batching, built-in data sets and user files.

Build by name: ``create_dataset("mnist1d-mt", num_train=4000)`` returns train/val/test
:class:`DataSplits`.
"""

from attnmtl.core.batch import Batch, Inputs, move_inputs
from attnmtl.data.dataset import LAYOUTS, DataSplits, MultiTaskDataset, batch_indices
from attnmtl.data.registry import DATASETS, create_dataset, list_datasets, register_dataset

# Importing the built-in data sets registers them.
from attnmtl.data import dense_sets, files, mnist1d_mt, multidigits, textmt  # noqa: F401  isort: skip

__all__ = [
    "DATASETS",
    "LAYOUTS",
    "Batch",
    "DataSplits",
    "Inputs",
    "MultiTaskDataset",
    "batch_indices",
    "create_dataset",
    "list_datasets",
    "move_inputs",
    "register_dataset",
]
