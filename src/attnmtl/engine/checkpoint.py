"""Checkpoints: tensors in safetensors, everything else in JSON, each written atomically.

A checkpoint is a folder ``checkpoints/<name>/`` holding

- ``model.safetensors``: the model's and the weighting strategy's tensors (``model.*``,
  ``weighting.*``);
- ``optimizer.safetensors``: the optimizer's (and AMP scaler's) tensors, plus the RNG states;
- ``state.json``: counters, scheduler state, the non-tensor optimizer state, RNG states that are
  not tensors, and the SHA-256 of both tensor files.

Nothing is unpickled on load. A folder is first written in full under a temporary name,
every file fsync-ed, then swapped in with renames (the previous version is kept until the new one
is in place), so a crash at any moment leaves a complete checkpoint — the new one or the old.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

FORMAT_VERSION = 1


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no NaN or Infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json_atomic(path: Path, data: Any, strict: bool = True) -> None:
    """Write JSON to ``path`` through a temporary file, fsync and rename.

    ``strict`` writes standard JSON (NaN/Inf become null) for files other tools read;
    checkpoints' own state keeps Python's ``Infinity``/``NaN`` tokens (read back exactly).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            if strict:
                json.dump(json_safe(data), f, indent=2, allow_nan=False)
            else:
                json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def split_state(state: Any, prefix: str, tensors: dict[str, Tensor]) -> Any:
    """Move every tensor of a nested state into ``tensors`` (keyed by path); JSON for the rest."""
    if isinstance(state, Tensor):
        tensors[prefix] = state.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(state, Mapping):
        return {
            "__dict__": [[k, split_state(v, f"{prefix}.{k}", tensors)] for k, v in state.items()]
        }
    if isinstance(state, (list, tuple)):
        items = [split_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(state)]
        return {"__tuple__": items} if isinstance(state, tuple) else items
    if state is None or isinstance(state, (bool, int, float, str)):
        return state
    raise ValueError(f"cannot store {type(state).__name__} at {prefix!r} in a checkpoint")


def join_state(data: Any, tensors: Mapping[str, Tensor]) -> Any:
    """Inverse of :func:`split_state`."""
    if isinstance(data, dict):
        if "__tensor__" in data:
            return tensors[data["__tensor__"]]
        if "__tuple__" in data:
            return tuple(join_state(v, tensors) for v in data["__tuple__"])
        return {k: join_state(v, tensors) for k, v in data["__dict__"]}
    if isinstance(data, list):
        return [join_state(v, tensors) for v in data]
    return data


def dedupe(named: list[tuple[str, Tensor]]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors to store, and aliases: a tensor registered under several names (a module shared
    by two parents, e.g. the seed's one attention scorer) is stored once."""
    stored: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[int, int, tuple[int, ...], tuple[int, ...], torch.dtype], str] = {}
    for name, tensor in named:
        tensor = tensor.detach()
        key = (
            tensor.untyped_storage().data_ptr(),
            int(tensor.storage_offset()),
            tuple(tensor.shape),
            tuple(tensor.stride()),
            tensor.dtype,
        )
        if tensor.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        stored[name] = tensor.cpu().clone().contiguous()  # no storage shared with another entry
    return stored, aliases


@dataclass
class Checkpoint:
    """What a checkpoint holds once loaded."""

    model: dict[str, Tensor]
    weighting: dict[str, Tensor]
    resume: dict[str, Any]  # optimizer, scheduler, scaler, RNG, counters, weighting extra state
    meta: dict[str, Any]  # step, epoch, metrics ... (JSON)
    path: Path


def save_checkpoint(
    folder: Path,
    model_state: Mapping[str, Tensor],
    weighting_state: Mapping[str, Tensor],
    resume_state: Mapping[str, Any],
    meta: Mapping[str, Any],
) -> Path:
    """Write a checkpoint folder atomically (see the module docstring); returns its path."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    try:
        named = [(f"model.{k}", v) for k, v in model_state.items()]
        named += [(f"weighting.{k}", v) for k, v in weighting_state.items()]
        weights, aliases = dedupe(named)
        save_file(weights, str(tmp / "model.safetensors"))
        tensors: dict[str, Tensor] = {}
        structure = split_state(dict(resume_state), "resume", tensors)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        for name in ("model.safetensors", "optimizer.safetensors"):
            with (tmp / name).open("rb") as f:
                os.fsync(f.fileno())
        state = {
            "format": FORMAT_VERSION,
            "meta": dict(meta),
            "resume": structure,
            "aliases": aliases,
            "sha256": {n: sha256(tmp / n) for n in ("model.safetensors", "optimizer.safetensors")},
        }
        write_json_atomic(tmp / "state.json", state, strict=False)
        old = folder.with_name(f".{folder.name}.old")
        if not folder.exists() and old.exists():  # an earlier swap was cut between its renames:
            os.replace(old, folder)  # the surviving copy goes back first, never deleted
        if old.exists():
            shutil.rmtree(old)
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        _fsync_dir(folder.parent)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _read(folder: Path) -> Checkpoint:
    state_path = folder / "state.json"
    try:
        state = json.loads(state_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"checkpoint {folder}: unreadable state.json ({err})") from None
    if state.get("format") != FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {folder}: format {state.get('format')!r}; expected {FORMAT_VERSION}"
        )
    for name, digest in state["sha256"].items():
        if not (folder / name).is_file() or sha256(folder / name) != digest:
            raise ValueError(
                f"checkpoint {folder}: {name} is missing or does not match its checksum"
            )
    weights = load_file(str(folder / "model.safetensors"))
    for alias, source in state.get("aliases", {}).items():
        weights[alias] = weights[source]
    tensors = load_file(str(folder / "optimizer.safetensors"))
    model = {k[6:]: v for k, v in weights.items() if k.startswith("model.")}
    weighting = {k[10:]: v for k, v in weights.items() if k.startswith("weighting.")}
    resume: dict[str, Any] = join_state(state["resume"], tensors)
    return Checkpoint(model, weighting, resume, state["meta"], folder)


def load_checkpoint(folder: Path) -> Checkpoint:
    """Load and verify a checkpoint folder; falls back to the previous version left by an
    interrupted swap. Raises ValueError naming the folder when neither is intact."""
    candidates = [folder, folder.with_name(f".{folder.name}.old")]
    errors = []
    for candidate in candidates:
        if candidate.is_dir():
            try:
                return _read(candidate)
            except ValueError as err:
                errors.append(str(err))
    detail = "; ".join(errors) if errors else "not found"
    raise ValueError(f"no intact checkpoint at {folder} ({detail})")


def rng_state() -> dict[str, Any]:
    """The global RNG states of Python, NumPy and torch (CPU and CUDA)."""
    import random

    import numpy as np

    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    assert isinstance(keys, np.ndarray)
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "python": [list(internal), version, gauss],
        "numpy": [name, torch.from_numpy(keys.astype("int64")), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    import random

    import numpy as np

    internal, version, gauss = state["python"]
    random.setstate((version, tuple(int(v) for v in internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(
        (name, keys.numpy().astype("uint32"), int(pos), int(has_gauss), float(cached))
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))
