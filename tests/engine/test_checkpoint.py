"""Checkpoints: round trip without pickle, atomic replacement, corruption detected."""

import json

import pytest
import torch

from attnmtl.engine.checkpoint import (
    load_checkpoint,
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


def test_saving_again_replaces_the_folder_and_leaves_no_temporaries(tmp_path):
    _save(tmp_path / "last", 1.0)
    _save(tmp_path / "last", 2.0)
    assert torch.equal(load_checkpoint(tmp_path / "last").model["w"], torch.full((2, 2), 2.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_a_corrupted_file_is_detected(tmp_path):
    folder = _save(tmp_path / "last")
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        load_checkpoint(folder)


def test_an_interrupted_swap_falls_back_to_the_previous_version(tmp_path):
    folder = _save(tmp_path / "last", 1.0)
    folder.rename(tmp_path / ".last.old")  # crash between the two renames
    assert torch.equal(load_checkpoint(tmp_path / "last").model["w"], torch.ones(2, 2))


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


def test_saving_after_an_interrupted_swap_keeps_the_surviving_copy_until_replaced(tmp_path):
    _save(tmp_path / "last", 1.0)
    (tmp_path / "last").rename(tmp_path / ".last.old")  # crash between the two renames
    _save(tmp_path / "last", 2.0)
    assert torch.equal(load_checkpoint(tmp_path / "last").model["w"], torch.full((2, 2), 2.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_json_files_for_other_tools_are_strict_json(tmp_path):
    import json

    from attnmtl.engine.checkpoint import write_json_atomic

    write_json_atomic(tmp_path / "s.json", {"a": float("nan"), "b": [1.0, float("inf")], "c": 2})
    text = (tmp_path / "s.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": 2}
    write_json_atomic(tmp_path / "state.json", {"best": float("inf")}, strict=False)
    assert json.loads((tmp_path / "state.json").read_text())["best"] == float("inf")
