"""A CSV with missing labels trains; its unlabelled cells never reach a loss."""

import math

import torch

from attnmtl.run.build import build_data, build_model
from attnmtl.run.config import load_config
from attnmtl.run.trainer import Trainer


def test_csv_with_missing_labels_trains_and_never_reads_unlabelled_cells(tmp_path):
    config = load_config(
        "csv_example", ["train.epochs=3", "train.progress=false", "train.tensorboard=false"]
    )
    splits = build_data(config)
    train = splits.train
    counts = train.label_counts()
    assert min(counts.values()) > 0 and max(counts.values()) < len(train)  # really partial
    for task, labels in train.labels.items():  # poison every unlabelled cell with NaN
        if labels.is_floating_point():
            labels[~train.label_mask[task]] = float("nan")
        else:
            labels[~train.label_mask[task]] = -12345  # out of range: cross-entropy would fail
    model = build_model(config, splits)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    summary = Trainer.from_config(config, splits, model, tmp_path).fit()
    for name, value in model.state_dict().items():
        assert torch.isfinite(value).all(), name
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    history = summary["tasks"]
    assert set(history) == {"cultivar", "intense_color", "alcohol"}
    assert all(math.isfinite(v) for metrics in history.values() for v in metrics.values())
