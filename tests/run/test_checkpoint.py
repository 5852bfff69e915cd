"""Checkpoints: round trip without pickle, atomic replacement, corruption detected, the
previous generation kept and used when the current one is bad, failed writes change nothing."""

import errno
import json
import os

import pytest
import torch
from safetensors import SafetensorError

from attnmtl.run import checkpoint as ckpt
from attnmtl.run.checkpoint import (
    CheckpointFallbackWarning,
    CheckpointWriteError,
    load_checkpoint,
    read_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def _save(folder, value=1.0):
    model = {"w": torch.full((2, 2), value), "b": torch.zeros(2)}
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.ones(2))], lr=0.1)
    optimizer.param_groups[0]["params"][0].grad = torch.ones(2)
    optimizer.step()
    resume = {"optimizer": optimizer.state_dict(), "tuple": (1, "a"), "none": None}
    return save_checkpoint(folder, model, {"s": torch.tensor([0.5])}, resume, {"epoch": 3})


def test_round_trip_restores_tensors_and_structure(tmp_path):
    folder = _save(tmp_path / "last")
    state = load_checkpoint(folder)
    assert torch.equal(state.model["w"], torch.ones(2, 2))
    assert torch.equal(state.weighting["s"], torch.tensor([0.5]))
    assert state.resume["tuple"] == (1, "a") and state.resume["none"] is None
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.ones(2))], lr=0.1)
    optimizer.load_state_dict(state.resume["optimizer"])
    assert optimizer.state_dict()["state"][0]["exp_avg"].shape == (2,)
    assert state.meta == {"epoch": 3}
    assert {p.name for p in folder.iterdir()} == {
        "model.safetensors",
        "optimizer.safetensors",
        "state.json",
    }


def _w(folder):
    return read_checkpoint(folder).model["w"][0, 0].item()


def test_saving_again_keeps_one_previous_generation_and_no_temporaries(tmp_path):
    _save(tmp_path / "last", 1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    _save(tmp_path / "last", 2.0)
    _save(tmp_path / "last", 3.0)
    assert _w(tmp_path / "last") == 3.0 and _w(tmp_path / ".last.prev") == 2.0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".last.prev", "last"]


def test_a_corrupted_file_is_detected(tmp_path):
    folder = _save(tmp_path / "last")
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        load_checkpoint(folder)


def test_an_interrupted_swap_falls_back_to_the_previous_version(tmp_path):
    folder = _save(tmp_path / "last", 1.0)
    folder.rename(tmp_path / ".last.prev")  # crash between the two renames
    with pytest.warns(CheckpointFallbackWarning, match=r"last: not found; using .*\.last\.prev"):
        assert torch.equal(load_checkpoint(tmp_path / "last").model["w"], torch.ones(2, 2))


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "state"])
def test_a_bad_current_checkpoint_falls_back_to_the_previous_one_with_a_warning(tmp_path, damage):
    _save(tmp_path / "last", 1.0)
    folder = _save(tmp_path / "last", 2.0)
    target = folder / ("state.json" if damage == "state" else "model.safetensors")
    data = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        target.write_bytes(data[:-1] + bytes([data[-1] ^ 0x01]))
    elif damage == "delete":
        target.unlink()
    else:
        target.write_text('{"format": 1')
    bad = "unreadable state.json" if damage == "state" else "model.safetensors is missing or"
    with pytest.warns(CheckpointFallbackWarning) as record:
        state = load_checkpoint(folder)
    assert torch.equal(state.model["w"], torch.ones(2, 2)) and state.path == tmp_path / ".last.prev"
    message = str(record[0].message)
    assert str(folder) in message and bad in message and str(tmp_path / ".last.prev") in message


def test_repair_puts_the_previous_generation_back_and_keeps_the_bad_one_aside(tmp_path):
    _save(tmp_path / "last", 1.0)
    folder = _save(tmp_path / "last", 2.0)
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.warns(CheckpointFallbackWarning, match="kept as .last.corrupt"):
        state = load_checkpoint(folder, repair=True)
    assert state.path == folder and _w(folder) == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".last.corrupt", "last"]
    _save(folder, 3.0)  # the next save keeps the good generation, not the bad one, as previous
    assert _w(tmp_path / ".last.prev") == 1.0


def test_both_generations_bad_is_an_error_naming_both(tmp_path):
    _save(tmp_path / "last", 1.0)
    folder = _save(tmp_path / "last", 2.0)
    for name in ("last", ".last.prev"):
        (tmp_path / name / "optimizer.safetensors").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"no intact checkpoint at .*last.*\.last\.prev"):
        load_checkpoint(folder)


def test_a_failed_write_leaves_the_checkpoint_there_intact_and_no_temporaries(
    tmp_path, monkeypatch
):
    _save(tmp_path / "last", 1.0)
    _save(tmp_path / "last", 2.0)
    real_save_file, calls = ckpt.save_file, []

    def full_disk(tensors, path):
        calls.append(path)
        if len(calls) == 2:  # the model file went in; the optimizer's does not fit
            real_save_file(tensors, path)  # a partial file is on disk, as with a real full disk
            raise SafetensorError("Error while serializing: I/O error: No space left (os error 28)")
        real_save_file(tensors, path)

    monkeypatch.setattr(ckpt, "save_file", full_disk)
    with pytest.raises(CheckpointWriteError, match="No space left on device") as raised:
        _save(tmp_path / "last", 3.0)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(tmp_path / "last")
    assert _w(tmp_path / "last") == 2.0 and _w(tmp_path / ".last.prev") == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".last.prev", "last"]


def test_a_rename_that_fails_midway_is_undone(tmp_path, monkeypatch):
    _save(tmp_path / "last", 1.0)
    _save(tmp_path / "last", 2.0)
    real_replace = os.replace

    def replace(source, target):
        if ".tmp-" in os.path.basename(source) and os.path.basename(target) == "last":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_replace(source, target)

    monkeypatch.setattr(ckpt.os, "replace", replace)
    with pytest.raises(CheckpointWriteError, match="cannot write checkpoint 'last'"):
        _save(tmp_path / "last", 3.0)
    monkeypatch.undo()
    assert _w(tmp_path / "last") == 2.0 and _w(tmp_path / ".last.prev") == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".last.prev", "last"]


def test_temporaries_left_by_a_killed_save_are_removed_by_the_next(tmp_path):
    _save(tmp_path / "last", 1.0)
    (tmp_path / ".last.tmp-abc").mkdir()
    (tmp_path / ".last.tmp-abc" / "model.safetensors").write_bytes(b"partial")
    (tmp_path / ".best.tmp-def").mkdir()  # another checkpoint's: not this save's business
    _save(tmp_path / "last", 2.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".best.tmp-def", ".last.prev", "last"]


def test_missing_checkpoint_names_the_folder(tmp_path):
    with pytest.raises(ValueError, match="no intact checkpoint"):
        load_checkpoint(tmp_path / "last")


def test_state_json_holds_no_pickled_payload(tmp_path):
    folder = _save(tmp_path / "last")
    state = json.loads((folder / "state.json").read_text())
    assert set(state) == {"format", "meta", "resume", "aliases", "sha256"}


def test_a_module_shared_by_two_parents_is_stored_once_and_restored_under_both_names(tmp_path):
    shared = torch.nn.Linear(2, 1)
    model = torch.nn.ModuleDict(
        {"a": torch.nn.Sequential(shared), "b": torch.nn.Sequential(shared)}
    )
    folder = save_checkpoint(tmp_path / "last", model.state_dict(), {}, {}, {})
    state = load_checkpoint(folder)
    assert json.loads((folder / "state.json").read_text())["aliases"] == {
        "model.b.0.weight": "model.a.0.weight",
        "model.b.0.bias": "model.a.0.bias",
    }
    fresh = torch.nn.ModuleDict({"a": torch.nn.Linear(2, 1), "b": torch.nn.Linear(2, 1)})
    fresh = torch.nn.ModuleDict({k: torch.nn.Sequential(v) for k, v in fresh.items()})
    fresh.load_state_dict(state.model)
    assert torch.equal(fresh["b"][0].weight, shared.weight)


def test_rng_states_round_trip():
    import random

    import numpy as np

    saved = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(saved)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_saving_after_an_interrupted_swap_keeps_the_surviving_copy_as_previous(tmp_path):
    _save(tmp_path / "last", 1.0)
    (tmp_path / "last").rename(tmp_path / ".last.prev")  # crash between the two renames
    _save(tmp_path / "last", 2.0)
    assert _w(tmp_path / "last") == 2.0 and _w(tmp_path / ".last.prev") == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".last.prev", "last"]


def test_json_files_for_other_tools_are_strict_json(tmp_path):
    import json

    from attnmtl.run.checkpoint import write_json_atomic

    write_json_atomic(tmp_path / "s.json", {"a": float("nan"), "b": [1.0, float("inf")], "c": 2})
    text = (tmp_path / "s.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": 2}
    write_json_atomic(tmp_path / "state.json", {"best": float("inf")}, strict=False)
    assert json.loads((tmp_path / "state.json").read_text())["best"] == float("inf")
