"""A tiny learnable multi-task data set for engine tests, registered as ``toy-mt``.

Sequences (N, 12, 3); task ``cls`` = which of 3 channels has the largest total (multiclass),
task ``reg`` = the mean of channel 0 (regression); ``missing`` labels are dropped at random.
"""

import torch

from attnmtl.core.tasks import Task
from attnmtl.data import DATASETS, DataSplits, MultiTaskDataset, register_dataset


def toy_mt(
    num_train: int = 96, num_val: int = 32, num_test: int = 32, missing: float = 0.0, seed: int = 0
) -> DataSplits:
    gen = torch.Generator().manual_seed(seed)
    tasks = [Task("cls", "multiclass", 3), Task("reg", "regression")]

    def split(n):
        x = torch.randn(n, 12, 3, generator=gen)
        labels = {"cls": x.sum(1).argmax(1), "reg": x[..., 0].mean(1) * 3}
        mask = {k: torch.rand(n, generator=gen) >= missing for k in labels}
        return MultiTaskDataset(x, labels, tasks, mask)

    return DataSplits(split(num_train), split(num_val), split(num_test), {"seed": seed})


if "toy-mt" not in DATASETS:
    register_dataset("toy-mt")(toy_mt)

TOY = {
    "name": "toy",
    "data": {"name": "toy-mt"},
    "model": {"name": "attention_mtl", "encoder_options": {"cell": "gru", "hidden_dim": 8}},
    "optimizer": {"lr": 0.01},
    "train": {"epochs": 3, "batch_size": 16, "progress": False, "tensorboard": False},
}


def toy_config(**sections):
    """The toy run config with some sections' keys replaced."""
    import copy

    data = copy.deepcopy(TOY)
    for section, values in sections.items():
        if isinstance(values, dict):
            data.setdefault(section, {}).update(values)
        else:
            data[section] = values
    return data
