"""The preprocessed NYUv2 and Cityscapes ``.npy`` folders of MTAN and LibMTL, read into tensors.

Axes: N samples, C channels, H height, W width. On disk every sample is channel-last; what
:func:`read_scene_folder` returns is channel-first.

Layout, as the reference loaders read it (each ``__getitem__`` loads
``ROOT/<split>/<folder>/<index>.npy`` for ``index`` in ``range(len(os.listdir(.../image)))``)::

    ROOT/train/image/0.npy, 1.npy, ...   (H, W, 3) float, RGB in [0, 1]
    ROOT/train/label/...                 (H, W) class indices, -1 = unlabelled
    ROOT/train/depth/...                 (H, W, 1) float, 0 = no measurement
    ROOT/train/normal/...                (H, W, 3) float unit normals, 0 = none   (NYUv2 only)
    ROOT/val/...                         the same; the references evaluate ("test") on val

- NYUv2 (MTAN's release, also LibMTL's ``examples/nyu``): 288×384, 13 classes, folders
  ``image, label, depth, normal``; 795 train and 654 val samples.
- Cityscapes (MTAN's 128×256 release, also LibMTL's ``examples/cityscapes``): 128×256, 7 classes,
  folders ``image, label_7, depth``, no normals. MTAN's release holds ``label_2``, ``label_7`` and
  ``label_19`` (its README: "2, 7, and 19-class semantic labels" and "(inverse) depth labels");
  LibMTL's loader reads ``label/`` with 7 classes, i.e. the 7-class folder renamed. This reader
  takes ``label_7/`` when present, else ``label/``. 2975 train and 500 val samples.

Sources read (for the layout and conventions; no code is taken from them):

- lorenmt/mtan ``im2im_pred/create_dataset.py`` (class ``NYUv2``: ``np.moveaxis(..., -1, 0)`` on
  image, depth and normal, label read as is; everything cast with ``.float()``) and
  ``im2im_pred/utils.py`` (``nll_loss(ignore_index=-1)``; depth and normal masks are
  ``sum over channels != 0``; the confusion matrix keeps ``0 <= target < n``);
- median-research-group/LibMTL ``examples/nyu/create_dataset.py``, ``examples/nyu/utils.py``
  (``CrossEntropyLoss(ignore_index=-1)``, the same masks) and ``examples/cityscapes/
  create_dataset.py`` / ``main.py`` (``mode='test'`` reads ``val/``; 7 classes);
- lorenmt/auto-lambda ``create_dataset.py`` (maps the NYUv2 image with ``2 * im - 1``, so the
  stored image is in [0, 1]).

Conventions of the result:

- ``"image"`` (N, 3, H, W) float32, as stored (no normalisation applied);
- ``"segmentation"`` (N, H, W) int64: values in ``[0, C)`` are kept, every other value (-1, 255,
  any other out-of-range or non-finite value) becomes -1, the ignore index of both references;
  a fractional label is an error;
- ``"depth"`` (N, 1, H, W) float32, as stored: 0 (and any non-finite value) marks an invalid
  pixel and is left as is;
- ``"normals"`` (N, 3, H, W) float32 (NYUv2 only), as stored; all-zero vectors mark invalid
  pixels.

Any consistent H×W is accepted (tests use small images); the canonical sizes are
:data:`NYUV2_SIZE` and :data:`CITYSCAPES_SIZE`. Sample files must be named ``0.npy`` ...
``<n-1>.npy`` in every sub-folder (the references index them that way) and are read in numeric
order. Image, depth and normals must be stored as floating point (an integer image could be 0-255
or 0-1; it is refused rather than guessed).

Problems are reported as one ``ValueError`` whose message has one line per problem, all found in
one pass where that is cheap: the layout (root, split folder, sub-folders), the file names and
counts (from directory listings), then every file's shape and dtype (from the ``.npy`` headers,
without reading the data), then the label values while filling. Memory: the result tensors are
allocated once and filled one file at a time.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

__all__ = [
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_SHAPES",
    "CITYSCAPES_SIZE",
    "NYUV2_CLASSES",
    "NYUV2_SHAPES",
    "NYUV2_SIZE",
    "SceneKind",
    "read_scene_folder",
]

SceneKind = Literal["nyuv2", "cityscapes"]

NYUV2_CLASSES = 13
CITYSCAPES_CLASSES = 7
# Canonical (H, W) of the released folders; any consistent size is read.
NYUV2_SIZE = (288, 384)
CITYSCAPES_SIZE = (128, 256)
# Per-sample shapes on disk (channel-last), keyed by sub-folder.
NYUV2_SHAPES: dict[str, tuple[int, ...]] = {
    "image": (*NYUV2_SIZE, 3),
    "label": NYUV2_SIZE,
    "depth": (*NYUV2_SIZE, 1),
    "normal": (*NYUV2_SIZE, 3),
}
CITYSCAPES_SHAPES: dict[str, tuple[int, ...]] = {
    "image": (*CITYSCAPES_SIZE, 3),
    "label_7": CITYSCAPES_SIZE,
    "depth": (*CITYSCAPES_SIZE, 1),
}
# At most this many problem lines in one error; the rest are counted.
MAX_PROBLEMS = 30

_INDEX_NAME = re.compile(r"(0|[1-9][0-9]*)\.npy")


@dataclass(frozen=True)
class _Role:
    """One per-sample array: its output key, candidate sub-folders and channels (None: H×W)."""

    key: str
    folders: tuple[str, ...]
    channels: int | None
    floating: bool


@dataclass(frozen=True)
class _Kind:
    name: str
    classes: int
    size: tuple[int, int]
    roles: tuple[_Role, ...]

    def layout(self) -> str:
        folders = ",".join("|".join(role.folders) for role in self.roles)
        return f"ROOT/{{train,val}}/{{{folders}}}/0.npy, 1.npy, ... (the MTAN / LibMTL layout)"


_IMAGE = _Role("image", ("image",), 3, True)
_DEPTH = _Role("depth", ("depth",), 1, True)
_KINDS: dict[str, _Kind] = {
    "nyuv2": _Kind(
        "NYUv2",
        NYUV2_CLASSES,
        NYUV2_SIZE,
        (
            _IMAGE,
            _Role("segmentation", ("label",), None, False),
            _DEPTH,
            _Role("normals", ("normal",), 3, True),
        ),
    ),
    "cityscapes": _Kind(
        "Cityscapes",
        CITYSCAPES_CLASSES,
        CITYSCAPES_SIZE,
        (_IMAGE, _Role("segmentation", ("label_7", "label"), None, False), _DEPTH),
    ),
}


class _Problems:
    """Problem lines, raised together as one ``ValueError``."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, line: str) -> None:
        self.lines.append(line)

    def raise_if_any(self) -> None:
        if not self.lines:
            return
        shown = self.lines[:MAX_PROBLEMS]
        if len(self.lines) > MAX_PROBLEMS:
            shown.append(f"... and {len(self.lines) - MAX_PROBLEMS} more problems")
        raise ValueError("\n".join(shown))


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _expected(role: _Role, size: tuple[int, int]) -> tuple[int, ...]:
    return size if role.channels is None else (*size, role.channels)


def _read_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a ``.npy`` header, without reading the data."""
    with path.open("rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:  # format 3.0 (utf-8 field names) and later: let numpy parse it
            array = np.load(path, mmap_mode="r", allow_pickle=False)
            shape, dtype = array.shape, array.dtype
    return tuple(int(s) for s in shape), np.dtype(dtype)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _list_indices(folder: Path, problems: _Problems) -> list[int] | None:
    """The sample indices of ``folder``'s ``.npy`` files (sorted), reporting bad names and gaps."""
    indices: list[int] = []
    found_npy = False
    for entry in folder.iterdir():
        if not entry.name.endswith(".npy"):
            continue  # other files (README, .DS_Store, ...) are not samples
        found_npy = True
        if _INDEX_NAME.fullmatch(entry.name) is None:
            problems.add(
                f"{entry}: file name is not a sample index (expected 0.npy, 1.npy, ..., "
                "decimal without leading zeros)"
            )
            continue
        indices.append(int(entry.name[: -len(".npy")]))
    if not found_npy:
        problems.add(f"{folder}/ has no .npy files")
        return None
    indices.sort()
    if indices and indices != list(range(len(indices))):
        present = set(indices)
        top = max(indices)
        missing = [i for i in range(top + 1) if i not in present]
        shown = ", ".join(str(i) for i in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        problems.add(
            f"{folder}/: sample files are not 0.npy ... {len(indices) - 1}.npy: "
            f"missing {shown}{more} (up to {top}.npy)"
        )
    return indices


def read_scene_folder(
    root: str | Path,
    split: str,
    kind: Literal["nyuv2", "cityscapes"],
    limit: int | None = None,
) -> dict[str, torch.Tensor]:
    """Read ``ROOT/<split>/`` of a preprocessed NYUv2 or Cityscapes folder (module docstring).

    ``split`` is a folder name under ``root``: ``"train"`` or ``"val"`` in the released data
    (the references evaluate on ``val``). ``limit`` reads only samples ``0 .. limit-1``; the
    file names and counts are still checked for the whole folder.

    Returns channel-first tensors: ``"image"`` (N, 3, H, W) float32, ``"segmentation"``
    (N, H, W) int64 with -1 for ignored pixels, ``"depth"`` (N, 1, H, W) float32 and, for
    NYUv2, ``"normals"`` (N, 3, H, W) float32.

    Raises ``ValueError`` (one line per problem) on a missing root, split folder or sub-folder,
    a sub-folder without ``.npy`` files, a file name that is not a sample index, sub-folders
    with different sample counts, a file of the wrong shape or dtype, or fractional labels.
    """
    spec = _KINDS.get(kind)
    if spec is None:
        raise ValueError(f"kind must be one of {', '.join(_KINDS)}, got {kind!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
    if not isinstance(split, str) or not split or Path(split).name != split:
        raise ValueError(f"split must be a folder name such as 'train' or 'val', got {split!r}")

    layout = spec.layout()
    base = Path(root).expanduser()
    if not base.exists():
        raise ValueError(f"{spec.name} root {base} does not exist; expected {layout}")
    if not base.is_dir():
        raise ValueError(f"{spec.name} root {base} is not a folder; expected {layout}")
    split_dir = base / split
    if not split_dir.is_dir():
        found = sorted(p.name for p in base.iterdir() if p.is_dir())
        raise ValueError(
            f"{spec.name} split folder {split_dir} does not exist "
            f"(folders in the root: {', '.join(found) or 'none'}); expected {layout}"
        )

    # 1. Sub-folders.
    problems = _Problems()
    folders: dict[str, Path] = {}
    for role in spec.roles:
        present = [split_dir / name for name in role.folders if (split_dir / name).is_dir()]
        if present:
            folders[role.key] = present[0]
        else:
            wanted = " (or ".join(f"{name}/" for name in role.folders)
            wanted += ")" * (len(role.folders) - 1)
            problems.add(
                f"{spec.name} sub-folder {split_dir}/{wanted} is missing; expected {layout}"
            )
    problems.raise_if_any()

    # 2. File names and counts (directory listings only).
    counts: dict[str, int] = {}
    for role in spec.roles:
        indices = _list_indices(folders[role.key], problems)
        if indices is not None:
            counts[role.key] = len(indices)
    if len(counts) == len(spec.roles) and len(set(counts.values())) > 1:
        listed = ", ".join(f"{folders[key].name}/ {n}" for key, n in counts.items())
        problems.add(f"sub-folders of {split_dir} hold different numbers of samples: {listed}")
    problems.raise_if_any()
    total = next(iter(counts.values()))
    n = total if limit is None else min(limit, total)

    # 3. Shapes and dtypes (headers only); H×W is the size most files have.
    headers: dict[tuple[str, int], tuple[tuple[int, ...], np.dtype]] = {}
    # (With limit 0, sample 0 is still checked: it gives H×W.)
    checked = max(n, 1)
    for role in spec.roles:
        for index in range(checked):
            path = folders[role.key] / f"{index}.npy"
            try:
                headers[role.key, index] = _read_header(path)
            except (OSError, ValueError, SyntaxError) as error:
                problems.add(f"{path}: not a readable .npy array ({_one_line(error)})")
    sizes = Counter(shape[:2] for shape, _ in headers.values() if len(shape) >= 2)
    size = spec.size
    if sizes:
        common = sizes.most_common(1)[0][0]
        size = (common[0], common[1])
    for role in spec.roles:
        expected = _expected(role, size)
        for index in range(checked):
            if (role.key, index) not in headers:
                continue
            shape, dtype = headers[role.key, index]
            path = folders[role.key] / f"{index}.npy"
            if shape != expected:
                problems.add(
                    f"{path}: shape {_shape_text(shape)}, expected {_shape_text(expected)} "
                    f"({spec.name} {folders[role.key].name} is "
                    f"{'H×W' if role.channels is None else f'H×W×{role.channels}'}; "
                    f"canonical H×W {spec.size[0]}×{spec.size[1]})"
                )
            allowed = "f" if role.floating else "fiu"
            if dtype.kind not in allowed:
                what = "floating point" if role.floating else "integer or floating point"
                problems.add(f"{path}: dtype {dtype}, expected {what}")
    problems.raise_if_any()

    # 4. Fill preallocated tensors, one file at a time.
    h, w = size
    out: dict[str, torch.Tensor] = {}
    for role in spec.roles:
        if role.channels is None:
            out[role.key] = torch.empty((n, h, w), dtype=torch.int64)
        else:
            out[role.key] = torch.empty((n, role.channels, h, w), dtype=torch.float32)
    for role in spec.roles:
        target = out[role.key]
        for index in range(n):
            path = folders[role.key] / f"{index}.npy"
            try:
                array = np.load(path, allow_pickle=False)
            except (OSError, ValueError, EOFError) as error:
                problems.add(f"{path}: not a readable .npy array ({_one_line(error)})")
                continue
            if role.channels is None:
                labels = _labels(array, spec.classes, path, problems)
                if labels is not None:
                    target[index].copy_(torch.from_numpy(labels))
            else:
                values = np.moveaxis(np.asarray(array, dtype=np.float32), -1, 0)
                target[index].copy_(torch.from_numpy(np.ascontiguousarray(values)))
    problems.raise_if_any()
    return out


def _labels(array: np.ndarray, classes: int, path: Path, problems: _Problems) -> np.ndarray | None:
    """Class indices as int64 with every value outside ``[0, classes)`` mapped to -1."""
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        fractional = finite & (array != np.floor(np.where(finite, array, 0)))
        if fractional.any():
            first = array[fractional].flat[0]
            problems.add(
                f"{path}: {int(fractional.sum())} labels are not whole numbers "
                f"(first {float(first)}); labels are class indices"
            )
            return None
        valid = finite & (array >= 0) & (array < classes)
        return np.where(valid, array, -1).astype(np.int64)
    valid = (array >= 0) & (array < classes)
    # Cast before filling: -1 in an unsigned array would wrap to its maximum.
    return np.where(valid, array.astype(np.int64), -1)
