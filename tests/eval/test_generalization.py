"""Generalization: presets move their parameter beyond training, drops are signed, shifts bite."""

import inspect
import math

import pytest

from attnmtl.data import DATASETS
from attnmtl.eval.metrics import HIGHER_IS_BETTER
from attnmtl.pipeline import train_run
from attnmtl.run.config import parse_config
from attnmtl.run.generalize import (
    PRESETS,
    generalization,
    preset_shifts,
    relabelled_tasks,
    score_drop,
)

TINY = {
    "name": "tiny",
    "data": {"name": "multidigits", "num_train": 1000, "num_val": 64, "num_test": 256},
    "model": {
        "name": "attention_mtl",
        "encoder": "cnn",
        "encoder_options": {"channels": [16, 32], "downsample": 2},
        "attention_options": {"hidden_dim": 8},
    },
    "optimizer": {"lr": 0.005},
    "train": {
        "epochs": 3,
        "batch_size": 32,
        "progress": False,
        "tensorboard": False,
        "threads": 1,
        "monitor": "loss",
    },
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A small CNN trained for 3 epochs (about 1 s): ~0.9 test accuracy on both digits."""
    out = tmp_path_factory.mktemp("generalization") / "run"
    train_run(parse_config(TINY), out)
    return out


def test_presets_move_their_parameter_beyond_the_training_default():
    for data, presets in PRESETS.items():
        params = inspect.signature(DATASETS.get(data)).parameters
        for name, shift in presets.items():
            for key, value in shift.overrides.items():
                assert key in params, (data, name, key)
                default = params[key].default
                if "noise" in key or key in ("max_translation", "overlap"):
                    assert value > default, (data, name, key)  # more noise, wider, more overlap
                else:
                    assert value != default, (data, name, key)


def test_drops_are_positive_when_worse_in_either_direction():
    base = {"t": {"accuracy": 0.9, "loss": 0.2}, "gone": {"accuracy": 0.5}}
    shifted = {"t": {"accuracy": 0.6, "loss": 0.5}}
    drop = score_drop(base, shifted)
    assert drop == {"t": {"accuracy": pytest.approx(0.3), "loss": pytest.approx(0.3)}}
    assert score_drop(shifted, base)["t"] == {
        "accuracy": pytest.approx(-0.3),
        "loss": pytest.approx(-0.3),
    }


def test_a_wider_translation_relabels_the_position_task():
    assert relabelled_tasks("mnist1d-mt", PRESETS["mnist1d-mt"]["translation"].overrides) == [
        "position"
    ]
    assert relabelled_tasks("mnist1d-mt", PRESETS["mnist1d-mt"]["noise"].overrides) == []
    assert relabelled_tasks("multidigits", {"max_translation": 72}) == []


def test_unknown_data_sets_and_presets_are_one_line_errors():
    with pytest.raises(ValueError, match=r"^no shift presets for data set 'files' .*\}$"):
        preset_shifts("files")
    with pytest.raises(
        ValueError, match=r"^shift 'blur' for data set 'multidigits'; expected one of: overlap, "
    ):
        preset_shifts("multidigits", ["noise", "blur"])


def test_strong_noise_lowers_accuracy_and_the_drops_follow_the_directions(run_dir):
    result = generalization(run_dir, {"heavy": {"noise": 0.8}})
    base, shift = result["in_distribution"], result["shifts"]["heavy"]
    assert result["data"] == "multidigits"
    assert shift["overrides"] == {"noise": 0.8}
    for task in ("left", "right"):
        assert base[task]["accuracy"] > 0.5  # it learned something ...
        assert shift["scores"][task]["accuracy"] < base[task]["accuracy"] - 0.2  # ... noise hurts
        for metric, drop in shift["drop"][task].items():
            change = shift["scores"][task][metric] - base[task][metric]
            assert drop == pytest.approx(-change if HIGHER_IS_BETTER[metric] else change)
        assert shift["drop"][task]["accuracy"] > 0.2
        assert shift["drop"][task]["loss"] > 0


def test_presets_by_name(run_dir):
    result = generalization(run_dir, ["noise", "overlap"])
    assert list(result["shifts"]) == ["noise", "overlap"]
    for shift in result["shifts"].values():
        assert shift["description"]
        assert not math.isnan(shift["scores"]["left"]["accuracy"])
