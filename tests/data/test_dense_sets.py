"""The dense scene data sets: scenes-mt built and split, a fake NYUv2 folder in MTAN's layout
trained end to end through the Trainer with its metrics checked by hand, the augmentation
wrapper, and the trivial predictors the done-when numbers compare against."""

import math

import numpy as np
import pytest
import torch

from attnmtl.core.batch import Batch
from attnmtl.data import create_dataset
from attnmtl.data.dense_sets import SceneAugment
from attnmtl.eval.dense_metrics import constant_prediction
from attnmtl.eval.metrics import evaluate
from attnmtl.report.run_report import build_report
from attnmtl.run.build import build_data, build_model
from attnmtl.run.config import dump_config, parse_config
from attnmtl.run.trainer import Trainer


def test_scenes_mt_splits_and_task_choice():
    splits = create_dataset("scenes-mt", num_train=8, num_val=4, num_test=4, height=16, width=16)
    assert [len(d) for _, d in splits.items()] == [8, 4, 4]
    assert splits.train.layout == "image" and splits.train.input_shape == (3, 16, 16)
    assert [t.kind for t in splits.tasks.values()] == ["segmentation", "depth", "normals"]
    assert splits.tasks["segmentation"].size == len(splits.info["classes"]) == 6
    # splits come from different seeds: no image repeats
    assert not torch.equal(splits.train.inputs[:4], splits.val.inputs)
    two = create_dataset("scenes-mt", num_train=4, num_val=2, num_test=2, tasks=["depth"])
    assert list(two.tasks) == ["depth"]
    with pytest.raises(ValueError, match=r"tasks=\['edges'\]; expected some of"):
        create_dataset("scenes-mt", num_train=4, num_val=2, num_test=2, tasks=["edges"])


def write_nyuv2(root, split: str, n: int, h: int = 16, w: int = 16, seed: int = 0) -> None:
    """A tiny NYUv2 folder in MTAN's layout: channel-last .npy files, -1 unlabelled."""
    rng = np.random.default_rng(seed)
    for sub in ("image", "label", "depth", "normal"):
        (root / split / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        label = rng.integers(0, 13, (h, w)).astype(np.float32)
        label[0, :3] = -1
        depth = rng.uniform(0.5, 5.0, (h, w, 1)).astype(np.float32)
        depth[1, :4] = 0
        normal = rng.normal(size=(h, w, 3)).astype(np.float32)
        normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
        np.save(
            root / split / "image" / f"{i}.npy", rng.uniform(0, 1, (h, w, 3)).astype(np.float32)
        )
        np.save(root / split / "label" / f"{i}.npy", label)
        np.save(root / split / "depth" / f"{i}.npy", depth)
        np.save(root / split / "normal" / f"{i}.npy", normal)


def test_a_fake_nyuv2_folder_trains_end_to_end_and_its_metrics_are_the_definitions(tmp_path):
    write_nyuv2(tmp_path / "nyu", "train", 12)
    write_nyuv2(tmp_path / "nyu", "val", 6, seed=1)
    cfg = parse_config(
        {
            "name": "fake-nyu",
            "data": {"name": "nyuv2", "root": str(tmp_path / "nyu"), "val_fraction": 0.25},
            "model": {"name": "segnet_mtan", "widths": [4, 8]},
            "optimizer": {"name": "adam", "lr": 0.01, "weight_decay": 0.0},
            "train": {
                "epochs": 2,
                "batch_size": 4,
                "progress": False,
                "tensorboard": False,
                "report": False,
                "threads": 1,
            },
        }
    )
    splits = build_data(cfg)
    assert [len(d) for _, d in splits.items()] == [9, 3, 6]
    assert splits.train.augment is not None  # MTAN's scale-crop and flip by default
    torch.manual_seed(0)
    model = build_model(cfg, splits)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(dump_config(cfg))
    summary = Trainer.from_config(cfg, splits, model, tmp_path / "run").fit()
    assert set(summary["tasks"]) == {"segmentation", "depth", "normals"}
    report = build_report(tmp_path / "run").read_text()
    assert "Predictions" in report
    for task in ("segmentation", "depth", "normals"):  # input, truth, prediction per task
        assert (tmp_path / "run" / "plots" / f"predictions-{task}.png").stat().st_size > 1000
    # the test metrics, recomputed by hand from the model's predictions on the val/ folder
    test = splits.test
    got = evaluate(model, test, test.tasks)
    model.eval()
    with torch.no_grad():
        out = model(test.inputs).preds
    seg, truth = out["segmentation"].argmax(1), test.labels["segmentation"]
    keep = truth >= 0
    ious = []
    for c in range(13):
        p, t = (seg == c) & keep, truth == c
        union = int((p | t).sum())
        if union:
            ious.append(int((p & t).sum()) / union)
    assert got["segmentation"]["miou"] == pytest.approx(np.mean(ious), abs=1e-6)
    assert got["segmentation"]["pixel_acc"] == pytest.approx(
        float((seg[keep] == truth[keep]).double().mean()), abs=1e-6
    )
    d_hat, d = out["depth"][:, 0], test.labels["depth"][:, 0]
    valid = d != 0
    assert got["depth"]["abs_err"] == pytest.approx(
        float((d_hat - d)[valid].abs().mean()), rel=1e-5
    )
    n_hat = torch.nn.functional.normalize(out["normals"], dim=1)
    cos = (n_hat * test.labels["normals"]).sum(1).clamp(-1, 1)
    angle = torch.rad2deg(torch.acos(cos.double())).flatten()
    assert got["normals"]["mean_angle"] == pytest.approx(float(angle.mean()), abs=1e-3)
    assert got["normals"]["within_30"] == pytest.approx(float((angle < 30).double().mean()))


def test_a_missing_folder_is_one_line(tmp_path):
    with pytest.raises(ValueError) as info:
        create_dataset("nyuv2", root=str(tmp_path / "absent"))
    assert "absent" in str(info.value) and "\n" not in str(info.value)


def test_the_augmentation_flips_normals_x_and_keeps_the_label_set():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 4, 6, generator=g)
    normals = torch.nn.functional.normalize(torch.randn(2, 3, 4, 6, generator=g), dim=1)
    labels = {"segmentation": torch.randint(0, 3, (2, 4, 6), generator=g), "normals": normals}
    mask = {k: torch.ones(2, dtype=torch.bool) for k in labels}
    out = SceneAugment(scales=(1.0,), flip=1.0)(Batch(image, labels, mask), g)
    torch.testing.assert_close(out.inputs, image.flip(-1))
    torch.testing.assert_close(out.labels["segmentation"], labels["segmentation"].flip(-1))
    flipped = normals.flip(-1).clone()
    flipped[:, 0] *= -1
    torch.testing.assert_close(out.labels["normals"], flipped)
    assert set(out.labels) == {"segmentation", "normals"}  # no depth invented


def test_constant_predictions_are_the_best_constants():
    seg = torch.tensor([[[0, 2, 2], [2, -1, 1]]])
    assert constant_prediction("segmentation", 3, seg).argmax().item() == 2
    depth = torch.tensor([[[[1.0, 0.0, 3.0]]]])
    assert constant_prediction("depth", 1, depth).item() == pytest.approx(2.0)
    up = torch.zeros(1, 3, 2, 2)
    up[:, 1] = 1.0  # every normal +y: the best constant is +y
    best = constant_prediction("normals", 3, up)
    assert math.degrees(math.acos(min(1.0, float(best[1])))) < 0.1
