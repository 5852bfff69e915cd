"""Every dense model trains through the Trainer with loss-based and gradient-based weightings,
in ``parameters`` mode, and in ``features`` mode where the model has one shared representation
(cut there: the cut's leaves get each task's gradient)."""

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from attnmtl.eval.dense_images import paint
from attnmtl.run.build import build_data, build_model
from attnmtl.run.config import parse_config
from attnmtl.run.trainer import PREVIEWS, Trainer

SMALL = {
    "segnet": {"widths": [4, 8]},
    "segnet_mtan": {"widths": [4, 8]},
    "resnet_dilated": {"widths": [4, 4, 8, 8, 8], "head_width": 8, "rates": [1, 2]},
    "resnet_cross_stitch": {"widths": [4, 4, 8, 8, 8], "head_width": 8, "rates": [1, 2]},
    "resnet_mmoe": {
        "widths": [4, 4, 8, 8, 8],
        "head_width": 8,
        "rates": [1, 2],
        "num_experts": 2,
        "gate_size": [4, 4],
    },
}
SPLITS = {"segnet", "resnet_dilated"}
WEIGHTINGS = [
    {"name": "uncertainty"},
    {"name": "dwa"},
    {"name": "pcgrad"},
    {"name": "mgda", "mode": "features"},
]


def config(model: str, weighting: dict) -> dict:
    return {
        "name": "dense-models",
        "data": {
            "name": "scenes-mt",
            "num_train": 16,
            "num_val": 8,
            "num_test": 8,
            "height": 16,
            "width": 16,
        },
        "model": {"name": model, **SMALL[model]},
        "weighting": weighting,
        "optimizer": {"name": "adam", "lr": 0.01, "weight_decay": 0.0},
        "train": {
            "epochs": 1,
            "batch_size": 8,
            "progress": False,
            "tensorboard": False,
            "report": False,
            "threads": 1,
        },
    }


@pytest.mark.parametrize("weighting", WEIGHTINGS, ids=lambda w: "-".join(map(str, w.values())))
@pytest.mark.parametrize("model", list(SMALL))
def test_dense_model_trains_with_the_weighting(model, weighting):
    cfg = parse_config(config(model, weighting))
    splits = build_data(cfg)
    torch.manual_seed(0)
    net = build_model(cfg, splits)
    if weighting.get("mode") == "features" and model not in SPLITS:
        pattern = (
            r"needs a model with one shared representation \(.*resnet_dilated.*segnet.*\); "
            r"model (SegNetMTAN|DilatedResNetCrossStitch|DilatedResNetMMoE) has none"
        )
        with pytest.raises(ValueError, match=pattern):
            Trainer.from_config(cfg, splits, net, None).fit()
        return
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    summary = Trainer.from_config(cfg, splits, net, None).fit()
    metrics = summary["tasks"]
    assert set(metrics) == {"segmentation", "depth", "normals"}
    assert all(math.isfinite(v) for task in metrics.values() for v in task.values())
    moved = [n for n, p in net.named_parameters() if not torch.equal(before[n], p)]
    shared = {id(p) for p in net.shared_parameters()}
    assert any(id(dict(net.named_parameters())[n]) in shared for n in moved)
    for task in splits.tasks:  # every task's own parameters trained
        assert any(
            not torch.equal(before[n], p)
            for n, p in net.named_parameters()
            if id(p) in {id(q) for q in net.task_parameters(task)}
        )


def test_tensorboard_shows_predictions_beside_truth_and_mtan_masks(tmp_path):
    """Each epoch: per dense task, the first validation images' (input, truth, prediction)
    grid, the truth painted as the report paints it; MTAN's masks beside them."""

    raw = config("segnet_mtan", {"name": "equal"})
    raw["train"].update(tensorboard=True, epochs=2)
    cfg = parse_config(raw)
    splits = build_data(cfg)
    torch.manual_seed(0)
    net = build_model(cfg, splits)
    Trainer.from_config(cfg, splits, net, tmp_path).fit()
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    events.Reload()
    tags = set(events.Tags()["images"])
    expected = {f"{kind}/{t}" for kind in ("predictions", "attention") for t in splits.tasks}
    assert tags == expected
    shots = events.Images("predictions/segmentation")
    assert len(shots) == 2  # one per epoch
    grid = np.asarray(Image.open(io.BytesIO(shots[-1].encoded_image_string)).convert("RGB"))
    assert grid.shape == (PREVIEWS * 16, 3 * 16, 3)
    task = splits.tasks["segmentation"]
    truth = splits.val.labels["segmentation"][0]
    valid = truth >= 0
    painted = paint(task, truth, valid, None)  # (16, 16, 3) in [0, 1]
    np.testing.assert_allclose(grid[:16, 16:32] / 255.0, painted, atol=1 / 255 + 1e-6)
    masks = np.asarray(
        Image.open(io.BytesIO(events.Images("attention/depth")[-1].encoded_image_string))
    )
    assert masks.shape[:2] == (PREVIEWS * 16, 16)
