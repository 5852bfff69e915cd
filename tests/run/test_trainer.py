"""The trainer end to end on a tiny data set: run directory, metrics, resumption, masks."""

import json

import pytest
import torch
from safetensors.torch import load_file

from attnmtl.pipeline import resume_run, train_run
from attnmtl.run.checkpoint import load_checkpoint
from attnmtl.run.config import parse_config

from .conftest import toy_config


def _train(tmp_path, name="run", **sections):
    config = parse_config(toy_config(**sections))
    return train_run(config, tmp_path / name)


def test_a_run_leaves_config_checkpoints_metrics_and_summary(tmp_path):
    run_dir, summary = _train(tmp_path, train={"tensorboard": True})
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.yaml", "checkpoints", "metrics.jsonl", "summary.json", "tb"} <= names
    kept = {p.name for p in (run_dir / "checkpoints").iterdir() if not p.name.startswith(".")}
    assert kept == {"best", "last"}  # (plus each one's previous generation, .<name>.prev)
    saved = json.loads((run_dir / "summary.json").read_text())
    assert set(saved["tasks"]) == {"cls", "reg"}
    assert 0.0 <= saved["tasks"]["cls"]["accuracy"] <= 1.0
    assert saved["tasks"]["reg"]["mae"] >= 0.0
    assert saved == json.loads(json.dumps(summary))
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [0, 1, 2]
    assert any(e["event"] == "train" and set(e["loss"]) == {"cls", "reg"} for e in events)
    assert any((run_dir / "tb").iterdir())


def test_training_lowers_the_loss_and_learns_the_classes(tmp_path):
    _, summary = _train(tmp_path, train={"epochs": 8}, data={"num_train": 256})
    assert summary["tasks"]["cls"]["accuracy"] > 0.6  # chance is 1/3


def test_resuming_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    full, _ = _train(
        tmp_path, "full", train={"epochs": 4, "checkpoint_every": 5}, model={"dropout": 0.2}
    )
    part, _ = _train(
        tmp_path, "part", train={"epochs": 2, "checkpoint_every": 5}, model={"dropout": 0.2}
    )
    resume_run(part, ["train.epochs=4"])
    a = load_file(str(full / "checkpoints" / "last" / "model.safetensors"))
    b = load_file(str(part / "checkpoints" / "last" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resuming_from_a_mid_epoch_checkpoint_replays_the_same_batches(tmp_path, monkeypatch):
    full, _ = _train(tmp_path, "full", train={"epochs": 2, "checkpoint_every": 4, "log_every": 1})
    from attnmtl.run.trainer import Trainer

    original = Trainer.step

    def crash_at_step_10(self, batch):
        if self.position.step == 10:
            raise RuntimeError("simulated crash")
        return original(self, batch)

    monkeypatch.setattr(Trainer, "step", crash_at_step_10)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _train(tmp_path, "part", train={"epochs": 2, "checkpoint_every": 4, "log_every": 1})
    monkeypatch.setattr(Trainer, "step", original)
    state = load_checkpoint(tmp_path / "part" / "checkpoints" / "last")
    assert (state.meta["epoch"], state.meta["batch"], state.meta["step"]) == (1, 2, 8)
    resume_run(tmp_path / "part")
    a = load_file(str(full / "checkpoints" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "checkpoints" / "last" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the log reads as if nothing had happened: each step once, the same epoch means
    assert _log(tmp_path / "part") == _log(full)


def _log(run_dir):
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for event in events:
        event.pop("samples_per_s", None)
    return events


def test_a_task_missing_from_most_samples_trains_without_nan(tmp_path):
    _, summary = _train(tmp_path, data={"missing": 0.7})
    for values in summary["tasks"].values():
        assert all(v == v for v in values.values())  # no NaN


def test_bad_input_leaves_no_run_directory(tmp_path):
    data = toy_config()
    data["model"] = {
        "name": "seed_attn_transfer_mtl",
        "task_names": ["cls", "reg"],
        "task1_dim": 1,
        "task2_dim": 1,
    }
    with pytest.raises(ValueError, match=r"predicts \(2, 1\) for task 'cls'; expected \(B, 3\)"):
        train_run(parse_config(data), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_an_existing_run_directory_is_never_reused(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(ValueError, match="already exists"):
        _train(tmp_path, "taken")
    assert (tmp_path / "taken" / "file").read_text() == "x"


def test_resume_refuses_a_finished_run_and_a_changed_onecycle_length(tmp_path):
    run_dir, _ = _train(tmp_path, train={"epochs": 1}, schedule={"name": "onecycle"})
    with pytest.raises(ValueError, match="the run has finished"):
        resume_run(run_dir)
    with pytest.raises(ValueError, match="cannot change on --resume with schedule 'onecycle'"):
        resume_run(run_dir, ["train.epochs=2"])
    assert "epochs: 1" in (run_dir / "config.yaml").read_text()


def test_a_monitor_metric_the_task_does_not_report_is_refused(tmp_path):
    with pytest.raises(ValueError, match="task 'cls' reports accuracy, f1, loss"):
        _train(tmp_path, train={"monitor": "cls:mae"})
