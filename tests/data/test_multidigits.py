"""multidigits: the canvas against its source digits, disjoint pools, labels, seeds, arguments."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from attnmtl.data import create_dataset
from attnmtl.data.multidigits import multidigits, side_by_side
from attnmtl.data.splits import stratified_split

SOURCE = load_digits()
IMAGES = torch.from_numpy(SOURCE.images / 16.0).float()  # (1797, 8, 8) in [0, 1]
CLASSES = torch.from_numpy(SOURCE.target)
SMALL = {"num_train": 40, "num_val": 10, "num_test": 20}


def test_shapes_dtypes_and_value_range():
    splits = multidigits(**SMALL, overlap=3)
    assert [len(part) for _, part in splits.items()] == [40, 10, 20]
    assert splits.train.inputs.shape == (40, 1, 8, 13)
    assert splits.train.inputs.dtype == torch.float32
    assert splits.train.layout == "image"
    assert {n: (t.kind, t.size) for n, t in splits.tasks.items()} == {
        "left": ("multiclass", 10),
        "right": ("multiclass", 10),
    }
    for _, part in splits.items():
        assert float(part.inputs.min()) >= 0.0 and float(part.inputs.max()) <= 1.0
    assert float(splits.train.inputs.max()) == 1.0  # 16/16 ink is present


@pytest.mark.parametrize("overlap", [0, 2, 7])
def test_canvas_and_labels_match_the_source_digits(overlap):
    part = multidigits(**SMALL, overlap=overlap).test
    canvas = part.inputs[:, 0]  # (N, 8, 16 - overlap)
    left, right = IMAGES[part.meta["left_source"]], IMAGES[part.meta["right_source"]]
    shared = slice(8 - overlap, 8)
    assert torch.equal(canvas[:, :, : 8 - overlap], left[:, :, : 8 - overlap])
    assert torch.equal(canvas[:, :, 8:], right[:, :, overlap:])
    assert torch.equal(
        canvas[:, :, shared], torch.maximum(left[:, :, shared], right[:, :, :overlap])
    )
    assert torch.equal(part.labels["left"], CLASSES[part.meta["left_source"]])
    assert torch.equal(part.labels["right"], CLASSES[part.meta["right_source"]])


def test_side_by_side_hand_example():
    left = np.array([[[1.0, 0.2, 0.5]]])
    right = np.array([[[0.3, 0.7, 0.9]]])
    np.testing.assert_array_equal(side_by_side(left, right, 1), [[[1.0, 0.2, 0.5, 0.7, 0.9]]])
    np.testing.assert_array_equal(side_by_side(left, right, 2), [[[1.0, 0.3, 0.7, 0.9]]])
    np.testing.assert_array_equal(side_by_side(left, right, 0), [[[1.0, 0.2, 0.5, 0.3, 0.7, 0.9]]])


def test_splits_draw_from_disjoint_stratified_source_pools():
    splits = multidigits(num_train=3000, num_val=1000, num_test=1000)
    used = {
        name: set(part.meta["left_source"].tolist()) | set(part.meta["right_source"].tolist())
        for name, part in splits.items()
    }
    assert not used["train"] & used["test"]
    assert not used["train"] & used["val"]
    assert not used["val"] & used["test"]
    assert splits.info["source_pool_sizes"] == [1078, 360, 359]  # 60/20/20 of 1,797, per class
    assert len(used["test"]) > 340  # 2,000 draws from 359 images reach nearly all of them


def test_stratified_split_cuts_every_class_by_the_fractions():
    labels = np.repeat(np.arange(3), [10, 20, 5])
    parts = stratified_split(labels, (0.6, 0.2, 0.2), np.random.default_rng(0))
    assert sorted(np.concatenate(parts).tolist()) == list(range(35))
    counts = [np.bincount(labels[p], minlength=3).tolist() for p in parts]
    assert counts == [[6, 12, 3], [2, 4, 1], [2, 4, 1]]
    tiny = stratified_split(np.zeros(3, dtype=int), (0.9, 0.05, 0.05), np.random.default_rng(0))
    assert [len(p) for p in tiny] == [1, 1, 1]  # each part keeps one sample of the class


def test_sum_task_is_standardised_left_plus_right():
    splits = multidigits(**SMALL, with_sum=True)
    mean, std = splits.info["sum_mean"], splits.info["sum_std"]
    for _, part in splits.items():
        total = (part.labels["left"] + part.labels["right"]).double()
        assert torch.allclose(part.labels["sum"].double(), (total - mean) / std, atol=1e-6)
    train = splits.train.labels["sum"].double()
    assert abs(float(train.mean())) < 1e-6 and abs(float(train.std(unbiased=False)) - 1) < 1e-6
    assert splits.tasks["sum"].kind == "regression"
    fixed = multidigits(**SMALL, with_sum=True, sum_stats=(9.0, 4.0))
    total = (fixed.test.labels["left"] + fixed.test.labels["right"]).float()
    assert torch.allclose(fixed.test.labels["sum"], (total - 9.0) / 4.0)


def test_noise_changes_pixels_but_not_labels_or_range():
    clean, noisy = multidigits(**SMALL), multidigits(**SMALL, noise=0.3)
    assert torch.equal(clean.test.labels["left"], noisy.test.labels["left"])
    difference = (noisy.test.inputs - clean.test.inputs).abs()
    assert float(difference.mean()) > 0.05
    assert float(noisy.test.inputs.min()) >= 0.0 and float(noisy.test.inputs.max()) <= 1.0


def test_same_seed_same_data_other_seed_other_data():
    first, again, other = multidigits(**SMALL), multidigits(**SMALL), multidigits(**SMALL, seed=1)
    assert torch.equal(first.train.inputs, again.train.inputs)
    assert torch.equal(first.test.meta["right_source"], again.test.meta["right_source"])
    assert not torch.equal(first.train.inputs, other.train.inputs)


def test_registered_under_its_name():
    splits = create_dataset("multidigits", **SMALL, overlap=0)
    assert splits.train.input_shape == (1, 8, 16)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"overlap": 8}, "overlap=8"),
        ({"overlap": -1}, "overlap=-1"),
        ({"noise": -0.1}, "noise=-0.1"),
        ({"num_train": 1}, "num_train"),
        ({"num_test": -5}, "num_train"),
        ({"source_split": (0.5, 0.5)}, "source_split"),
        ({"source_split": (0.6, 0.5, -0.1)}, "source_split"),
        ({"source_split": (0.6, 0.2, 0.1)}, "summing to 1"),
        ({"with_sum": True, "sum_stats": (9.0, -1.0)}, "sum_stats"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        multidigits(**{**SMALL, **kwargs})
