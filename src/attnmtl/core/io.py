"""One atomic writer: a file is replaced whole or not at all.

Every file attnmtl writes into a run directory (config.yaml, summary.json, checkpoint state,
report.html) goes through :func:`write_atomic`: a temporary file in the same folder, fsync,
rename over the target, fsync of the folder. A crash leaves the old file or the new one, never
half of either.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename inside it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, write: Callable[[IO[str]], Any]) -> None:
    """Call ``write(f)`` on a temporary text file beside ``path``, then swap it in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    write_atomic(path, lambda f: f.write(text))


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
    """Write JSON to ``path`` atomically.

    ``strict`` writes standard JSON (NaN/Inf become null) for files other tools read;
    checkpoints' own state keeps Python's ``Infinity``/``NaN`` tokens (read back exactly).
    """

    def dump(f: IO[str]) -> None:
        if strict:
            json.dump(json_safe(data), f, indent=2, allow_nan=False)
        else:
            json.dump(data, f, indent=2)
        f.write("\n")

    write_atomic(path, dump)
