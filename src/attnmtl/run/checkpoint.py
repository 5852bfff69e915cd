"""Checkpoints: tensors in safetensors, everything else in JSON, each written atomically.

A checkpoint is a folder ``checkpoints/<name>/`` holding

- ``model.safetensors``: the model's and the weighting strategy's tensors (``model.*``,
  ``weighting.*``);
- ``optimizer.safetensors``: the optimizer's (and AMP scaler's) tensors, plus the RNG states;
- ``state.json``: counters, scheduler state, the non-tensor optimizer state, RNG states that are
  not tensors, and the SHA-256 of both tensor files.

Nothing is unpickled on load. A folder is first written in full under a temporary name,
every file fsync-ed, then swapped in with renames, so a crash at any moment leaves a complete
checkpoint — the new one or the old. The generation it replaces is kept beside it as
``.<name>.prev`` (so checkpoints take twice their size on disk): a current checkpoint that fails
its checks later (a truncated or flipped file, or a swap cut between its renames) is replaced on
load by the previous one, with a :class:`CheckpointFallbackWarning` naming both. A write that
fails (a full disk) raises :class:`CheckpointWriteError` and leaves what was there untouched.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from attnmtl.core.io import fsync_dir, write_json_atomic

FORMAT_VERSION = 1
TENSOR_FILES = ("model.safetensors", "optimizer.safetensors")


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (e.g. a full disk); the one already there is intact."""


class CheckpointFallbackWarning(UserWarning):
    """A checkpoint failed its checks and its previous generation was loaded instead."""


def previous_path(folder: Path) -> Path:
    """Where the generation that ``folder``'s current checkpoint replaced is kept."""
    return folder.with_name(f".{folder.name}.prev")


def checkpoint_exists(folder: Path) -> bool:
    """Whether a checkpoint was ever written at ``folder`` (intact or not, current or previous)."""
    return folder.is_dir() or previous_path(folder).is_dir()


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
    """Write a checkpoint folder atomically, keeping the one it replaces as the previous
    generation (see the module docstring); returns its path.

    Raises:
        CheckpointWriteError: the disk is full or not writable; nothing already there changed.
    """
    tmp: Path | None = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        for stale in folder.parent.glob(f".{folder.name}.tmp-*"):  # left by a killed save
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
        _write_folder(tmp, model_state, weighting_state, resume_state, meta)
        _swap_in(tmp, folder)
    except (OSError, SafetensorError) as err:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        code, reason = _os_error(err)
        raise CheckpointWriteError(
            code,
            f"cannot write checkpoint {folder.name!r} ({reason}); what was there is intact",
            str(folder),
        ) from err
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _write_folder(
    tmp: Path,
    model_state: Mapping[str, Tensor],
    weighting_state: Mapping[str, Tensor],
    resume_state: Mapping[str, Any],
    meta: Mapping[str, Any],
) -> None:
    """Every file of a checkpoint into the (new, empty) folder ``tmp``, fsync-ed."""
    named = [(f"model.{k}", v) for k, v in model_state.items()]
    named += [(f"weighting.{k}", v) for k, v in weighting_state.items()]
    weights, aliases = dedupe(named)
    save_file(weights, str(tmp / "model.safetensors"))
    tensors: dict[str, Tensor] = {}
    structure = split_state(dict(resume_state), "resume", tensors)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    for name in TENSOR_FILES:
        with (tmp / name).open("rb") as f:
            os.fsync(f.fileno())
    state = {
        "format": FORMAT_VERSION,
        "meta": dict(meta),
        "resume": structure,
        "aliases": aliases,
        "sha256": {n: sha256(tmp / n) for n in TENSOR_FILES},
    }
    write_json_atomic(tmp / "state.json", state, strict=False)


def _swap_in(tmp: Path, folder: Path) -> None:
    """Rename the complete ``tmp`` to ``folder``; the current one becomes the previous generation.

    Every step is one rename, so a crash between two leaves whole folders only: at worst no
    ``folder`` but its previous generation, which :func:`load_checkpoint` falls back to. The
    generation dropped is first renamed to a temporary name (removed by the next save if a
    crash leaves it), never deleted in place. A rename that fails is undone.
    """
    previous, trash = previous_path(folder), tmp.with_name(f"{tmp.name}.trash")
    moved: list[tuple[Path, Path]] = []
    try:
        if folder.exists():
            if previous.exists():
                os.replace(previous, trash)
                moved.append((previous, trash))
            os.replace(folder, previous)
            moved.append((folder, previous))
        os.replace(tmp, folder)
    except OSError:
        for source, target in reversed(moved):
            with contextlib.suppress(OSError):
                os.replace(target, source)
        raise
    fsync_dir(folder.parent)
    shutil.rmtree(trash, ignore_errors=True)


def _os_error(err: BaseException) -> tuple[int, str]:
    """(errno, reason) of a failed write; safetensors reports OS errors in its message."""
    if isinstance(err, OSError) and err.errno is not None:
        return err.errno, err.strerror or str(err)
    found = re.search(r"os error (\d+)", str(err))
    if found:
        return int(found.group(1)), os.strerror(int(found.group(1)))
    return errno.EIO, str(err)


def read_checkpoint(folder: Path) -> Checkpoint:
    """Load and verify exactly ``folder`` (no fallback). Raises ValueError naming the folder and
    the file when it is missing, unreadable or fails its checksum."""
    if not folder.is_dir():
        raise ValueError(f"checkpoint {folder}: not found")
    try:
        state = json.loads((folder / "state.json").read_text())
        version, digests = state.get("format"), dict(state["sha256"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"checkpoint {folder}: unreadable state.json ({err})") from None
    if version != FORMAT_VERSION:
        raise ValueError(f"checkpoint {folder}: format {version!r}; expected {FORMAT_VERSION}")
    for name, digest in digests.items():
        if not (folder / name).is_file() or sha256(folder / name) != digest:
            raise ValueError(
                f"checkpoint {folder}: {name} is missing or does not match its checksum"
            )
    try:
        weights = load_file(str(folder / "model.safetensors"))
        tensors = load_file(str(folder / "optimizer.safetensors"))
        for alias, source in state.get("aliases", {}).items():
            weights[alias] = weights[source]
        resume: dict[str, Any] = join_state(state["resume"], tensors)
    except (SafetensorError, OSError, KeyError, TypeError) as err:
        raise ValueError(f"checkpoint {folder}: unreadable ({err})") from None
    model = {k[6:]: v for k, v in weights.items() if k.startswith("model.")}
    weighting = {k[10:]: v for k, v in weights.items() if k.startswith("weighting.")}
    return Checkpoint(model, weighting, resume, state["meta"], folder)


def load_checkpoint(folder: Path, repair: bool = False) -> Checkpoint:
    """Load and verify checkpoint ``folder``, or its previous generation when it fails.

    A ``folder`` that is missing, truncated or fails its checksum is replaced by the previous
    generation (``.<name>.prev``, see :func:`save_checkpoint`), with a
    :class:`CheckpointFallbackWarning` that names the bad file and the checkpoint used.

    Args:
        folder: the checkpoint folder, e.g. ``run/checkpoints/last``.
        repair: after a fallback, also move the bad folder aside (to ``.<name>.corrupt``) and
            the previous generation back in its place — what a run about to continue (and save
            again) wants, so the bad one never becomes the kept previous generation.

    Raises:
        ValueError: naming the folder, when neither generation is intact.
    """
    previous = previous_path(folder)
    try:
        return read_checkpoint(folder)
    except ValueError as err:
        problem = str(err)
    if not previous.is_dir():
        raise ValueError(f"no intact checkpoint at {folder} ({problem})")
    try:
        checkpoint = read_checkpoint(previous)
    except ValueError as err:
        raise ValueError(f"no intact checkpoint at {folder} ({problem}; {err})") from None
    step = checkpoint.meta.get("step") if isinstance(checkpoint.meta, dict) else None
    used = f"{previous}" + (f" (step {step})" if step is not None else "")
    if repair:
        corrupt = folder.with_name(f".{folder.name}.corrupt")
        if folder.exists():
            shutil.rmtree(corrupt, ignore_errors=True)
            os.replace(folder, corrupt)
            used += f"; the bad one is kept as {corrupt.name}"
        os.replace(previous, folder)
        fsync_dir(folder.parent)
        checkpoint.path = folder
    warnings.warn(
        f"{problem}; using the previous checkpoint {used}", CheckpointFallbackWarning, stacklevel=2
    )
    return checkpoint


def load_reporting(folder: Path, log: Callable[[str], Any], repair: bool = False) -> Checkpoint:
    """:func:`load_checkpoint`, with a fallback reported through ``log`` (e.g. a console's)
    instead of as a Python warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CheckpointFallbackWarning)
        checkpoint = load_checkpoint(folder, repair)
    for warning in caught:
        if issubclass(warning.category, CheckpointFallbackWarning):
            log(f"warning: {warning.message}")
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    return checkpoint


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
