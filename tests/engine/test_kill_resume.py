"""A run killed with SIGKILL mid-training and resumed ends with the uninterrupted run's weights."""

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
]


def attnmtl(*args):
    return [sys.executable, "-m", "attnmtl", *args]


def last_weights(run_dir):
    return load_file(str(run_dir / "checkpoints" / "last" / "model.safetensors"))


def wait_for_step(run_dir, step, process, timeout=120.0):
    state = run_dir / "checkpoints" / "last" / "state.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the run ended before step {step} (exit {process.returncode})")
        try:
            if json.loads(state.read_text())["meta"]["step"] >= step:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)
    pytest.fail(f"no checkpoint at step {step} within {timeout} s")


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full = tmp_path / "full"
    subprocess.run(
        attnmtl("train", *SMALL, "--out", str(full)), check=True, env=env, capture_output=True
    )
    rng = random.Random(0)
    killed = tmp_path / "killed"
    for kill in range(2):  # kill twice, at different moments
        if kill == 0:
            process = subprocess.Popen(
                attnmtl("train", *SMALL, "--out", str(killed)),
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        else:
            process = subprocess.Popen(
                attnmtl("train", "--resume", str(killed)),
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        wait_for_step(killed, 8 + 52 * kill, process)  # of 120 steps
        time.sleep(rng.uniform(0.0, 0.05))
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait()
    done = subprocess.run(
        attnmtl("train", "--resume", str(killed)), env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    a, b = last_weights(full), last_weights(killed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["epochs"] == 3
