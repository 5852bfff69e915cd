"""The CPU scenes recipe, shortened, trained by the CLI: every dense task beats its best
constant predictor on test (the recipe's full run, in the README, beats it by more)."""

import json
import subprocess
import sys

import pytest

from attnmtl.data import create_dataset
from attnmtl.eval.metrics import trivial_scores

SHORT = ["data.num_train=800", "data.num_val=64", "data.num_test=128", "train.epochs=8"]


@pytest.mark.slow
def test_the_scenes_recipe_beats_every_trivial_predictor(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "attnmtl", "train", "-c", "scenes", *SHORT, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    scores = json.loads((out / "summary.json").read_text())["tasks"]
    splits = create_dataset("scenes-mt", num_train=800, num_val=64, num_test=128)
    floor = trivial_scores(splits.train, splits.test)
    assert scores["segmentation"]["miou"] > 1.5 * floor["segmentation"]["miou"]
    assert scores["depth"]["abs_err"] < 0.95 * floor["depth"]["abs_err"]
    assert scores["normals"]["mean_angle"] < 0.95 * floor["normals"]["mean_angle"]
    assert (out / "plots" / "predictions-depth.png").is_file()
