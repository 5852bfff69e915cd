"""Faults during training, in process: SIGINT/SIGTERM, non-finite losses, a full disk, a bad
``last`` checkpoint, a run killed before its first checkpoint. Each run that continues must end
with the weights of a run that saw no fault (CPU, fixed seed)."""

import io
import json
import math
import os
import signal
import threading

import pytest
import torch
from rich.console import Console
from safetensors import SafetensorError
from safetensors.torch import load_file

from attnmtl.data import DATASETS, register_dataset
from attnmtl.data.dataset import batch_indices
from attnmtl.pipeline import resume_run, train_run
from attnmtl.run import checkpoint as ckpt
from attnmtl.run.checkpoint import load_checkpoint
from attnmtl.run.config import parse_config
from attnmtl.run.trainer import StopRequests, Trainer, TrainingInterrupted

from .conftest import toy_config, toy_mt

# 96 training samples in batches of 16: 6 steps an epoch; `last` every 4 steps and each epoch.
# Every run here trains on one stated intra-op thread count, so runs compare bit for bit.
TRAIN = {"epochs": 3, "checkpoint_every": 4, "report": False, "log_every": 1, "threads": 1}
STEPS = 18
BAD_SAMPLE = 6  # in batches 4, 3 and 5 of the three epochs (seed 0)


def toy_nonfinite(
    num_train: int = 96, num_val: int = 32, num_test: int = 32, seed: int = 0, bad: str = "nan"
):
    """The toy data with training sample BAD_SAMPLE's regression label set to ``bad``."""
    splits = toy_mt(num_train, num_val, num_test, 0.0, seed)
    splits.train.labels["reg"][BAD_SAMPLE] = float(bad)
    return splits


def toy_global_rng(num_train: int = 96, num_val: int = 32, num_test: int = 32, seed: int = 0):
    """The toy data, built after drawing from torch's global RNG (as some data sets do)."""
    torch.rand(3)
    return toy_mt(num_train, num_val, num_test, 0.0, seed)


if "toy-nonfinite" not in DATASETS:
    register_dataset("toy-nonfinite")(toy_nonfinite)
    register_dataset("toy-global-rng")(toy_global_rng)


def _config(**train):
    return parse_config(toy_config(train={**TRAIN, **train}, model={"dropout": 0.2}))


def _console():
    return Console(file=io.StringIO(), width=300)


def _weights(run_dir):
    return load_file(str(run_dir / "checkpoints" / "last" / "model.safetensors"))


def _same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _log(run_dir):
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for event in events:
        event.pop("samples_per_s", None)
    return events


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A run that saw no fault: its directory (weights, log)."""
    run_dir, _ = train_run(_config(), tmp_path_factory.mktemp("ref") / "run", _console())
    return run_dir


def _signal_at(monkeypatch, signum, step, times=1):
    """Make the process send itself ``signum`` during step ``step`` (1-based)."""
    original = Trainer.step

    def step_and_signal(self, batch):
        if self.position.step + 1 == step:
            for _ in range(times):
                os.kill(os.getpid(), signum)
        return original(self, batch)

    monkeypatch.setattr(Trainer, "step", step_and_signal)


# ---------------------------------------------------------------- SIGINT / SIGTERM


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_ends_the_step_writes_last_and_resume_matches(
    tmp_path, monkeypatch, reference, signum, code
):
    before = {s: signal.getsignal(s) for s in StopRequests.SIGNALS}
    _signal_at(monkeypatch, signum, 9)
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingInterrupted) as raised:
        train_run(_config(), run_dir, _console())
    assert {s: signal.getsignal(s) for s in StopRequests.SIGNALS} == before  # restored
    assert raised.value.exit_code == code and raised.value.step == 9
    name = signal.Signals(signum).name
    assert str(raised.value) == (
        f"interrupted by {name} at step 9; resume with attnmtl train --resume {run_dir}"
    )
    meta = load_checkpoint(run_dir / "checkpoints" / "last").meta
    assert (meta["epoch"], meta["batch"], meta["step"]) == (1, 3, 9)  # mid-epoch, step 9 done
    monkeypatch.undo()
    resume_run(run_dir, console=_console())
    _same(_weights(reference), _weights(run_dir))
    assert _log(run_dir) == _log(reference)


def test_a_signal_during_the_last_evaluation_stops_and_resume_writes_the_summary(
    tmp_path, monkeypatch, reference
):
    original = Trainer.end_epoch

    def end_epoch(self, *args):
        if self.position.epoch == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        original(self, *args)

    monkeypatch.setattr(Trainer, "end_epoch", end_epoch)
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingInterrupted, match=f"at step {STEPS};"):
        train_run(_config(), run_dir, _console())
    assert not (run_dir / "summary.json").exists()
    monkeypatch.undo()
    _, summary = resume_run(run_dir, console=_console())
    assert summary["epochs"] == 3 and (run_dir / "summary.json").exists()
    _same(_weights(reference), _weights(run_dir))
    with pytest.raises(ValueError, match="the run has finished"):
        resume_run(run_dir, console=_console())


def test_resume_under_another_thread_count_warns_once_and_the_same_count_does_not(
    tmp_path, monkeypatch
):
    _signal_at(monkeypatch, signal.SIGTERM, 4)
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):
        train_run(_config(), run_dir, _console())
    monkeypatch.undo()
    meta = load_checkpoint(run_dir / "checkpoints" / "last").meta
    assert (meta["threads"], meta["device"]) == (1, "cpu")  # recorded in the checkpoint
    _signal_at(monkeypatch, signal.SIGTERM, 8)  # resume under 1 thread, stop again
    quiet = _console()
    with pytest.raises(TrainingInterrupted):
        resume_run(run_dir, console=quiet)
    assert "bit-identical" not in quiet.file.getvalue()
    monkeypatch.undo()
    loud = _console()
    resume_run(run_dir, ["train.threads=2"], console=loud)
    text = " ".join(loud.file.getvalue().split())
    assert text.count("bit-identical") == 1, text
    assert (
        "warning: the checkpoint was written with 1 intra-op thread(s) on cpu, this process has "
        "2 on cpu: training continues, but will not end bit-identical to an uninterrupted run; "
        "set train.threads=1 to match"
    ) in text


def test_a_second_signal_acts_as_before(tmp_path, monkeypatch):
    _signal_at(monkeypatch, signal.SIGINT, 3, times=2)
    with pytest.raises(KeyboardInterrupt):
        train_run(_config(), tmp_path / "run", _console())
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_signal_stays_ignored(monkeypatch):
    monkeypatch.setattr(signal, "getsignal", lambda s: signal.SIG_IGN)  # e.g. `attnmtl train &`
    installed = []
    monkeypatch.setattr(signal, "signal", lambda s, h: installed.append(s))
    with StopRequests() as stop:
        assert stop.previous == {}
    assert installed == []


def test_handlers_are_installed_only_in_the_main_thread():
    seen = []

    def enter():
        with StopRequests() as stop:
            seen.append((stop.previous, signal.getsignal(signal.SIGTERM)))

    thread = threading.Thread(target=enter)
    thread.start()
    thread.join()
    assert seen == [({}, signal.getsignal(signal.SIGTERM))]
    with StopRequests() as stop:
        assert signal.getsignal(signal.SIGTERM) == stop.request


# ---------------------------------------------------------------- non-finite losses


def _batches_with_the_bad_sample(n=96, batch_size=16):
    """(epoch, batch), 1-based, where the trainer meets BAD_SAMPLE: its shuffle, seed 0."""
    shuffle = torch.Generator().manual_seed(0)
    found = []
    for epoch in range(1, 4):
        order = batch_indices(n, batch_size, True, shuffle)
        found += [(epoch, i + 1) for i, index in enumerate(order) if BAD_SAMPLE in index.tolist()]
    return found


def _nonfinite_config(bad, policy):
    data = toy_config(train={**TRAIN, "nonfinite": policy}, model={"dropout": 0.2})
    data["data"] = {"name": "toy-nonfinite", "bad": bad}
    return parse_config(data)


def test_a_nan_loss_stops_the_run_naming_the_task_and_the_step(tmp_path):
    assert _batches_with_the_bad_sample()[0] == (1, 4)
    run_dir = tmp_path / "run"
    with pytest.raises(ValueError) as raised:
        train_run(_nonfinite_config("nan", "stop"), run_dir, _console())
    assert str(raised.value) == (
        "task 'reg' loss is nan at step 4 (epoch 1, batch 4); train.nonfinite=stop "
        "ends the run (train.nonfinite=skip skips such steps)"
    )
    assert not (run_dir / "summary.json").exists()


def test_an_inf_loss_under_skip_changes_nothing_that_step_and_is_counted(tmp_path, monkeypatch):
    original, unchanged = Trainer.step, []

    def step(self, batch):
        before = {k: v.clone() for k, v in self.model.state_dict().items()}
        result = original(self, batch)
        if not result[0]:  # a skipped step
            after = self.model.state_dict()
            unchanged.append(all(torch.equal(before[k], after[k]) for k in before))
        return result

    monkeypatch.setattr(Trainer, "step", step)
    console = _console()
    run_dir, summary = train_run(_nonfinite_config("inf", "skip"), tmp_path / "run", console)
    assert unchanged == [True, True, True]  # the bad sample's batch, once an epoch
    assert summary["skipped_steps"] == 3
    events = [e for e in _log(run_dir) if e["event"] == "epoch"]
    assert [e["skipped_steps"] for e in events] == [1, 1, 1]
    for event in events:
        assert all(math.isfinite(v) for v in event["train_loss"].values())
    text = " ".join(console.file.getvalue().split())
    for epoch, batch in _batches_with_the_bad_sample():  # once an epoch
        step = (epoch - 1) * 6 + batch
        assert f"loss is inf at step {step} (epoch {epoch}, batch {batch}): step skipped" in text
    assert text.count("step skipped") == 3
    assert all(torch.isfinite(v).all() for v in _weights(run_dir).values())


# ---------------------------------------------------------------- a bad `last`, a full disk


def test_a_truncated_last_resumes_from_the_previous_generation_with_a_warning(
    tmp_path, monkeypatch, reference
):
    _signal_at(monkeypatch, signal.SIGTERM, 10)
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):
        train_run(_config(), run_dir, _console())
    monkeypatch.undo()
    last = run_dir / "checkpoints" / "last"
    data = (last / "model.safetensors").read_bytes()
    (last / "model.safetensors").write_bytes(data[: len(data) // 3])
    console = _console()
    resume_run(run_dir, console=console)
    text = " ".join(console.file.getvalue().split())
    assert f"warning: checkpoint {last}: model.safetensors is missing or does not match" in text
    assert "using the previous checkpoint" in text and "(step 8)" in text
    assert "resuming" in text and "at epoch 2, batch 2" in text  # step 8 = epoch 2, batch 2
    assert (run_dir / "checkpoints" / ".last.corrupt").is_dir()
    _same(_weights(reference), _weights(run_dir))


def test_a_full_disk_fails_in_one_line_and_keeps_the_previous_checkpoint(
    tmp_path, monkeypatch, capsys, reference
):
    from attnmtl.cli import main

    real_save_file, calls = ckpt.save_file, []

    def full_disk(tensors, path):  # the fourth checkpoint's second file does not fit
        calls.append(path)
        real_save_file(tensors, path)
        if len(calls) == 8:
            raise SafetensorError("Error while serializing: I/O error: (os error 28)")

    monkeypatch.setattr(ckpt, "save_file", full_disk)
    run_dir = tmp_path / "run"
    config = tmp_path / "toy.yaml"
    config.write_text(json.dumps(toy_config(train=TRAIN, model={"dropout": 0.2})))
    with pytest.raises(SystemExit) as raised:
        main(["train", "-c", str(config), "--out", str(run_dir)])
    assert raised.value.code == 2
    last = run_dir / "checkpoints" / "last"
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (
        "attnmtl: error: cannot write checkpoint 'last' (No space left on device); what was "
        f"there is intact: {last}"
    )
    # written: last (step 4), best and last (step 6, end of epoch 1); failed: last (step 8)
    assert load_checkpoint(last).meta["step"] == 6
    assert sorted(p.name for p in last.parent.iterdir()) == [".last.prev", "best", "last"]
    monkeypatch.undo()
    resume_run(run_dir, console=_console())
    _same(_weights(reference), _weights(run_dir))


def test_a_run_killed_before_its_first_checkpoint_resumes_from_the_start(tmp_path, monkeypatch):
    config = toy_config(train=TRAIN, model={"dropout": 0.2}, data={"name": "toy-global-rng"})
    reference, _ = train_run(parse_config(config), tmp_path / "reference", _console())
    original = Trainer.step

    def crash_at_step_3(self, batch):
        if self.position.step == 2:
            raise RuntimeError("simulated SIGKILL")
        return original(self, batch)

    monkeypatch.setattr(Trainer, "step", crash_at_step_3)
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated SIGKILL"):
        train_run(parse_config(config), run_dir, _console())
    assert not (run_dir / "checkpoints").exists()
    monkeypatch.undo()
    console = _console()
    resume_run(run_dir, console=console)
    assert "no checkpoint yet: training from the start" in console.file.getvalue()
    _same(_weights(reference), _weights(run_dir))
    assert _log(run_dir) == _log(reference)


# ---------------------------------------------------------------- early stopping


def _early(patience, min_delta):
    return _config(epochs=6, early_stopping={"patience": patience, "min_delta": min_delta})


def test_early_stopping_stops_after_patience_epochs_without_a_min_delta_improvement(tmp_path):
    # nothing improves on epoch 1 by more than 1e9: epochs 2 and 3 are stale, stop after 3
    run_dir, summary = train_run(_early(2, 1e9), tmp_path / "run", _console())
    assert summary["epochs"] == 3 and summary["steps"] == 3 * 6
    assert summary["early_stopping"] == {"patience": 2, "min_delta": 1e9, "stopped_after_epoch": 3}
    with pytest.raises(ValueError, match=r"early stopping ended it after epoch 3"):
        resume_run(run_dir, console=_console())
    # a rule that never fires changes nothing: every epoch runs, the summary says so
    _, summary = train_run(_early(50, 0.0), tmp_path / "long", _console())
    assert summary["epochs"] == 6 and summary["early_stopping"]["stopped_after_epoch"] is None


def test_early_stopping_state_is_checkpointed_and_a_resumed_run_stops_alike(tmp_path, monkeypatch):
    reference, _ = train_run(_early(2, 1e9), tmp_path / "reference", _console())
    _signal_at(monkeypatch, signal.SIGTERM, 14)  # in epoch 3, after epoch 2 counted stale
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):
        train_run(_early(2, 1e9), run_dir, _console())
    meta = load_checkpoint(run_dir / "checkpoints" / "last").meta
    assert (meta["stale_epochs"], meta["stopped_early"]) == (1, None)
    monkeypatch.undo()
    _, summary = resume_run(run_dir, console=_console())
    assert summary["epochs"] == 3 and summary["early_stopping"]["stopped_after_epoch"] == 3
    _same(_weights(reference), _weights(run_dir))
