"""Runs of ``python -m attnmtl train`` stopped from outside and resumed end with the weights of a
run that was not: SIGKILL at random moments (mid-step, mid-checkpoint, mid-evaluation), a
truncated ``last`` checkpoint, SIGTERM and SIGINT (CPU, one thread, bit for bit)."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from attnmtl.run.checkpoint import load_checkpoint, read_checkpoint

SMALL = [
    "data.num_train=1280",
    "data.num_val=64",
    "data.num_test=64",
    "model.encoder_options={cell: gru, hidden_dim: 8, bidirectional: true}",
    "model.dropout=0.1",
    "train.epochs=3",
    "train.batch_size=32",
    "train.checkpoint_every=4",
    "train.threads=1",
    "train.progress=false",
    "train.tensorboard=false",
    "train.report=false",
]
STEPS = 120  # 3 epochs of 40 batches
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "500"}  # no wrapped log lines


def attnmtl(*args):
    return [sys.executable, "-m", "attnmtl", *args]


def last_weights(run_dir):
    return load_file(str(run_dir / "checkpoints" / "last" / "model.safetensors"))


def last_step(run_dir):
    try:
        return json.loads((run_dir / "checkpoints" / "last" / "state.json").read_text())["meta"][
            "step"
        ]
    except (OSError, ValueError, KeyError):
        return -1  # none yet, or between the renames of a swap


def wait_for_step(run_dir, step, process, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the run ended before step {step} (exit {process.returncode})")
        if last_step(run_dir) >= step:
            return
        time.sleep(0.01)
    pytest.fail(f"no checkpoint at step {step} within {timeout} s")


def start(run_dir, log, *args):
    """A new run into ``run_dir`` (no args), or a resume of it; stderr to ``log``."""
    command = (
        ["--resume", str(run_dir), *args] if run_dir.exists() else [*SMALL, "--out", str(run_dir)]
    )
    with log.open("w") as err:
        return subprocess.Popen(
            attnmtl("train", *command), env=ENV, stdout=subprocess.DEVNULL, stderr=err
        )


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def assert_no_checkpoint_corrupt(run_dir):
    """Every checkpoint folder (current and previous generations) passes its checks; only
    temporary folders of a cut save and a `.corrupt` one set aside on purpose may not."""
    folders = sorted((run_dir / "checkpoints").iterdir())
    kept = [f for f in folders if ".tmp-" not in f.name and not f.name.endswith(".corrupt")]
    for folder in kept:
        read_checkpoint(folder)
    load_checkpoint(run_dir / "checkpoints" / "last")  # the current one, or the previous one
    return [f.name for f in kept]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The final weights of a run that nothing stopped."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    subprocess.run(
        attnmtl("train", *SMALL, "--out", str(run_dir)), check=True, env=ENV, capture_output=True
    )
    return last_weights(run_dir)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_matches_an_uninterrupted_run(tmp_path, reference):
    rng = random.Random(20240607)
    run_dir = tmp_path / "killed"
    # one kill in each stretch of 20 steps, a random time after a random step: the kill lands
    # anywhere (a step, a checkpoint being written or swapped, the end-of-epoch evaluation)
    targets = [rng.randrange(low, low + 16) for low in (4, 24, 44, 64, 84)]
    seen = set()
    for i, target in enumerate(targets):
        log = tmp_path / f"stderr-{i}.txt"
        if i == 3:  # a truncated `last` before this resume: the previous generation is used
            model = run_dir / "checkpoints" / "last" / "model.safetensors"
            if model.exists():  # (absent if the kill fell between the two renames of a swap)
                model.write_bytes(model.read_bytes()[:100])
        process = start(run_dir, log)
        wait_for_step(run_dir, target, process)
        time.sleep(rng.uniform(0.0, 0.2))
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait()
        seen.update(assert_no_checkpoint_corrupt(run_dir))
        if i == 3:
            text = " ".join(log.read_text().split())
            last = run_dir / "checkpoints" / "last"
            assert f"warning: checkpoint {last}" in text, text
            assert f"using the previous checkpoint {last.parent / '.last.prev'}" in text
    assert {"last", ".last.prev", "best"} <= seen
    done = subprocess.run(
        attnmtl("train", "--resume", str(run_dir)), env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert_same_weights(reference, last_weights(run_dir))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["steps"] == STEPS


@pytest.mark.slow
def test_sigterm_then_sigint_stop_cleanly_and_resume_matches(tmp_path, reference):
    run_dir = tmp_path / "run"
    for i, (signum, code, after) in enumerate([(signal.SIGTERM, 143, 8), (signal.SIGINT, 130, 70)]):
        log = tmp_path / f"stderr-{i}.txt"
        process = start(run_dir, log)
        wait_for_step(run_dir, after, process)
        process.send_signal(signum)
        assert process.wait(timeout=60) == code
        step = last_step(run_dir)
        assert after <= step < STEPS
        name = signal.Signals(signum).name
        assert log.read_text().splitlines()[-1] == (
            f"attnmtl: error: interrupted by {name} at step {step}; "
            f"resume with attnmtl train --resume {run_dir}"
        )
        assert "Traceback" not in log.read_text()
    done = subprocess.run(
        attnmtl("train", "--resume", str(run_dir)), env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert_same_weights(reference, last_weights(run_dir))
