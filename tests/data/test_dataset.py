"""The in-memory multi-task data set: masks, subsets, batching, the one-task-per-sample mode."""

import pytest
import torch

from attnmtl.core.tasks import Task
from attnmtl.data import MultiTaskDataset, batch_indices

TASKS = [Task("a", "multiclass", 3), Task("b", "regression")]


def make(n=10, mask_b=None):
    labels = {"a": torch.arange(n) % 3, "b": torch.linspace(0, 1, n)}
    mask = {"b": mask_b} if mask_b is not None else None
    return MultiTaskDataset(torch.randn(n, 5, 2), labels, TASKS, mask, meta={"id": torch.arange(n)})


def test_batches_cover_every_sample_once_and_keep_rows_aligned():
    data = make(10)
    seen = []
    for batch in data.batches(4, shuffle=True, generator=torch.Generator().manual_seed(0)):
        ids = batch.labels["a"]
        assert torch.equal(ids, torch.tensor([int(i) % 3 for i in ids]))
        seen.append(len(batch))
    assert seen == [4, 4, 2]
    assert data.num_batches(4) == 3
    assert data.num_batches(4, drop_last=True) == 2
    assert sorted(torch.cat(batch_indices(10, 4, True)).tolist()) == list(range(10))


def test_subset_keeps_labels_masks_and_meta_aligned():
    mask = torch.tensor([True, False] * 5)
    data = make(10, mask)
    part = data.subset(torch.tensor([1, 2, 7]))
    assert part.meta["id"].tolist() == [1, 2, 7]
    assert part.label_mask["b"].tolist() == [False, True, False]
    assert part.label_counts() == {"a": 3, "b": 1}


def test_one_task_per_sample_keeps_exactly_one_label():
    data = make(400).one_task_per_sample(seed=3)
    both = torch.stack([data.label_mask["a"], data.label_mask["b"]], 1)
    assert bool((both.sum(1) == 1).all())
    share = data.label_counts()["a"] / 400
    assert 0.4 < share < 0.6
    again = make(400).one_task_per_sample(seed=3)
    assert torch.equal(again.label_mask["a"], data.label_mask["a"])


def test_one_task_per_sample_never_invents_a_label():
    mask_b = torch.tensor([False] * 5 + [True] * 5)
    data = make(10, mask_b).one_task_per_sample(seed=0)
    assert data.label_mask["a"][:5].all()
    assert not data.label_mask["b"][:5].any()


def test_input_dims_by_layout():
    assert make().input_dim == 2
    image = MultiTaskDataset(
        torch.zeros(4, 3, 8, 8),
        {"a": torch.zeros(4, dtype=torch.long), "b": torch.zeros(4)},
        TASKS,
        layout="image",
    )
    assert image.input_dim == 3
    assert image.input_shape == (3, 8, 8)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"labels": {"a": torch.zeros(10, dtype=torch.long)}}, "labels for tasks"),
        ({"layout": "graph"}, "layout='graph'"),
        ({"label_mask": {"a": torch.ones(3, dtype=torch.bool)}}, "label_mask of task 'a'"),
        ({"labels": {"a": torch.full((10,), 5), "b": torch.zeros(10)}}, r"lie in \[5, 5\]"),
        ({"lengths": torch.ones(3)}, "lengths has 3 rows"),
    ],
)
def test_bad_data_sets_are_refused(change, message):
    kwargs = {
        "inputs": torch.zeros(10, 5, 2),
        "labels": {"a": torch.zeros(10, dtype=torch.long), "b": torch.zeros(10)},
        "tasks": TASKS,
    }
    kwargs.update(change)
    with pytest.raises(ValueError, match=message):
        MultiTaskDataset(**kwargs)


def test_only_tasks_keeps_the_samples_and_the_augmentation():
    def flip(batch, generator):
        return batch

    x = torch.randn(5, 3)
    data = MultiTaskDataset(
        x,
        {"a": torch.arange(5) % 2, "b": torch.randn(5)},
        [Task("a", "binary"), Task("b", "regression")],
        {"a": torch.tensor([1, 0, 1, 1, 0]).bool(), "b": torch.ones(5, dtype=torch.bool)},
        layout="table",
        augment=flip,
    )
    one = data.only_tasks(["b"])
    assert list(one.tasks) == ["b"] and one.inputs is x and one.augment is flip
    assert torch.equal(one.label_mask["b"], data.label_mask["b"])
    with pytest.raises(ValueError, match=r"tasks \['c'\]; expected some of: a, b"):
        data.only_tasks(["c"])
