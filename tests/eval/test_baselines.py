"""Classical baselines: each fitted on the labelled training rows of its task and scored with
the model's own metrics on the same test rows, regression in natural units."""

import io

import pytest
import torch
from rich.console import Console

from attnmtl.core.tasks import Task
from attnmtl.data import DataSplits, MultiTaskDataset
from attnmtl.eval.baselines import fit_baselines
from attnmtl.pipeline import baselines_table, train_run
from attnmtl.run.config import load_config

TASKS = [
    Task("sign", "binary"),
    Task("bucket", "multiclass", 3),
    Task("pair", "multilabel", 2),
    Task("level", "regression"),
]


def linear_data(n: int, seed: int, missing: bool = False) -> MultiTaskDataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=gen)
    labels = {
        "sign": (x[:, 0] > 0).float(),
        "bucket": torch.bucketize(x[:, 1].contiguous(), torch.tensor([-0.5, 0.5])),
        "pair": torch.stack([(x[:, 2] > 0), (x[:, 3] > 0)], 1).float(),
        "level": 2 * x[:, 0] - x[:, 3],  # standard units: natural = 5 + 3 * this
    }
    masks = {k: torch.ones(n, dtype=torch.bool) for k in labels}
    if missing:  # half the level labels are absent: the baseline fits the labelled half
        masks["level"][::2] = False
    return MultiTaskDataset(x, labels, TASKS, masks)


@pytest.fixture(scope="module")
def splits():
    info = {"level_mean": 5.0, "level_std": 3.0}
    return DataSplits(linear_data(400, 0, True), linear_data(50, 1), linear_data(300, 2), info)


def test_linear_baselines_solve_linear_tasks_and_majority_is_the_majority(splits):
    results = fit_baselines(splits)
    assert set(results) == {"majority", "linear", "boosting"}
    linear, majority = results["linear"], results["majority"]
    assert linear["sign"]["accuracy"] > 0.97 and linear["pair"]["accuracy"] > 0.97
    assert linear["level"]["mae"] < 0.05 and linear["level"]["r2"] > 0.999
    test = splits.test
    # the most frequent training class, scored on the test rows
    frequent = float(splits.train.labels["sign"].mean()) >= 0.5
    share = float((test.labels["sign"] == frequent).float().mean())
    assert majority["sign"]["accuracy"] == pytest.approx(share)
    # the mean regressor, in natural units: |y - mean over the labelled training rows| × 3
    train_rows = splits.train.label_mask["level"]
    mean = splits.train.labels["level"][train_rows].mean()
    expected = float((test.labels["level"] - mean).abs().mean() * 3)
    assert majority["level"]["mae"] == pytest.approx(expected, rel=1e-5)
    assert majority["level"]["r2"] < 0.01  # a constant explains nothing


def test_unknown_baselines_are_one_line(splits):
    with pytest.raises(ValueError, match=r"baselines \['svm'\]; expected some of: majority"):
        fit_baselines(splits, ["svm"])


def test_train_baselines_go_into_the_summary_and_beside_the_results(tmp_path):
    quiet = ["train.epochs=2", "train.report=false", "train.tensorboard=false"]
    config = load_config("csv_example", [*quiet, "train.progress=false", "train.baselines=true"])
    _, summary = train_run(config, tmp_path / "run", Console(file=io.StringIO()))
    assert set(summary["baselines"]) == {"majority", "linear", "boosting"}
    assert set(summary["baselines"]["boosting"]) == {"cultivar", "intense_color", "alcohol"}
    out = io.StringIO()
    Console(file=out, width=200).print(baselines_table(summary))
    text = out.getvalue()
    assert "this run" in text and "boosting" in text and "alcohol mae" in text


def test_a_class_column_with_one_class_in_training_gets_the_constant_classifier(splits):
    """Logistic regression refuses one class; boosting mis-shapes its probabilities."""
    train = splits.train
    labels = dict(train.labels)
    labels["sign"] = torch.ones(len(train))  # binary: all positive in training
    labels["pair"] = torch.stack([torch.zeros(len(train)), labels["pair"][:, 1]], 1)
    one = MultiTaskDataset(train.inputs, labels, TASKS, train.label_mask)
    results = fit_baselines(DataSplits(one, splits.val, splits.test, splits.info))
    test = splits.test
    share = float(test.labels["sign"].mean())  # every baseline predicts class 1
    for baseline in ("majority", "linear", "boosting"):
        assert results[baseline]["sign"]["accuracy"] == pytest.approx(share)
        assert 0.0 <= results[baseline]["pair"]["accuracy"] <= 1.0
