"""User data files (CSV, Parquet, NPZ) as a multi-task data set: ``create_dataset("files", ...)``.

Axes: N samples, T time, F features, C channels / outputs, K tasks.

Real multi-task tables are rarely labelled for every task on every row. Following
"Learning Multiple Dense Prediction Tasks from Partially Annotated Data" (Li, Liu & Bilen,
CVPR 2022), a sample is kept even when some of its task labels are missing: an empty cell, a
value that parses to NaN, or the task's declared ``sentinel`` sets that sample's
``label_mask[task]`` to False and stores a 0 filler in its label entry, which no loss reads
(:mod:`attnmtl.core.tasks`). LibMTL cannot represent such samples (its issues #11 and #63).

CSV and Parquet columns are named; NPZ arrays are named. A problem with the files' structure
(a missing column, a wrong shape) is a one-line ``ValueError``. Problems in cells (a non-numeric
input, an out-of-range label, a label outside the declared classes...) are all collected in one
pass over every file and raised together, one line each (up to :data:`MAX_PROBLEMS`), each naming
the file, the column, where the row is — a CSV's file line (the header is line 1), a Parquet
file's 0-based row, an NPZ array's index — and the value of the first ``id_columns`` column
there, the bad value and what was expected. ``path`` may start with ``attnmtl:`` to read an
example file shipped in ``attnmtl/configs/data/``.
"""

from __future__ import annotations

import csv
import fnmatch
import math
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch

from attnmtl.core.tasks import TASK_KINDS, Task, TaskKind
from attnmtl.data.dataset import LAYOUTS, DataSplits, Layout, MultiTaskDataset
from attnmtl.data.registry import register_dataset
from attnmtl.data.splits import standardisation, stratified_split
from attnmtl.data.windows import Window, anchors, from_anchor, transform_windows

FORMATS = ("csv", "parquet", "npz")
SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".npz": "npz"}
TASK_KEYS = ("column", "kind", "size", "sentinel", "classes", "loss", "relative_to")
SHIPPED = "attnmtl:"
# Axes (with the sample axis) of the inputs each layout stores.
LAYOUT_NDIM = {"table": 2, "sequence": 3, "image": 4}
# A multiclass task's size is inferred as the largest label + 1 up to this; declare more.
MAX_INFERRED_CLASSES = 100_000
FLOAT32_MAX = float(np.finfo(np.float32).max)
# At most this many cell problems are listed in one error (the rest are counted).
MAX_PROBLEMS = 20
# A class with fewer rows than this share of a task's labels (or none) is named in the note on
# an inferred class set: a stray label is the usual cause.
RARE_CLASS = 0.01


@dataclass
class Rows:
    """How one file's data rows are named in errors: a CSV's file line, else the 0-based row,
    and the value of the file's first id column there when it has one."""

    fmt: str
    ids: np.ndarray | None = None
    id_name: str | None = None

    def at(self, row: int) -> str:
        """'line 7 (id 6)' for the 0-based data row ``row``."""
        where = f"line {row + 2}" if self.fmt == "csv" else f"row {row}"
        if self.ids is not None and row < len(self.ids):
            value = self.ids[row]
            where += f" ({self.id_name} {value if isinstance(value, str) else _shown(value)})"
        return where


class Problems:
    """Cell problems of the files, collected in one pass and raised together."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.count = 0
        self.by_place: Counter[str] = Counter()

    def add(self, place: str, line: str) -> None:
        """One problem; ``place`` (file and column) groups the ones not listed."""
        self.count += 1
        self.by_place[place] += 1
        if len(self.lines) < MAX_PROBLEMS:
            self.lines.append(line)

    def cells(self, place: str, rows: np.ndarray, line: Callable[[int], str]) -> None:
        """A problem at each of ``rows``; only as many lines are formed as can be listed."""
        room = max(0, MAX_PROBLEMS - len(self.lines))
        for row in rows[:room]:
            self.add(place, line(int(row)))
        rest = len(rows) - min(room, len(rows))
        if rest:
            self.count += rest
            self.by_place[place] += rest

    def raise_any(self) -> None:
        """Raise one ValueError listing every problem (the first line alone if one)."""
        if self.count == 0:
            return
        if self.count == 1:
            raise ValueError(self.lines[0])
        text = [f"{self.count} problems in the data:", *(f"  {line}" for line in self.lines)]
        if self.count > len(self.lines):
            counts = ", ".join(f"{place} {n}" for place, n in self.by_place.most_common(5))
            text.append(f"  ... and {self.count - len(self.lines)} more (in all: {counts})")
        raise ValueError("\n".join(text))


@dataclass(frozen=True)
class TaskSpec:
    """One task as the user declared it (see :func:`parse_task_spec`)."""

    name: str
    kind: str
    columns: tuple[str, ...]
    size: int | None = None
    sentinel: Any = None
    classes: tuple[Any, ...] | None = None
    loss: str | None = None
    relative_to: str | int | None = None


@dataclass
class Source:
    """One file read: float32 inputs, optional lengths, raw label arrays per task, and how
    its rows are named in errors."""

    path: str
    inputs: np.ndarray
    lengths: np.ndarray | None
    labels: dict[str, np.ndarray]
    rows: Rows = field(default_factory=lambda: Rows("npz"))


def parse_task_spec(name: str, spec: Mapping[str, Any]) -> TaskSpec:
    """Check one ``tasks`` entry (``column``, ``kind``, ``size``, ``sentinel``, ``classes``...)."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"task {name!r}: expected a mapping of options, got {spec!r}")
    for key in spec:
        if key not in TASK_KEYS:
            raise ValueError(
                f"task {name!r}: unknown option {key!r}; expected one of: {', '.join(TASK_KEYS)}"
            )
    kind = spec.get("kind")
    if kind not in TASK_KINDS:
        raise ValueError(f"task {name!r}: kind={kind!r}; expected one of: {', '.join(TASK_KINDS)}")
    column = spec.get("column", name)
    many = isinstance(column, Sequence) and not isinstance(column, str)
    columns = tuple(column) if many else (column,)
    if not columns or not all(isinstance(c, str) and c for c in columns):
        raise ValueError(f"task {name!r}: column={column!r}; expected a name or a list of names")
    if len(columns) > 1 and kind not in ("multilabel", "regression"):
        raise ValueError(
            f"task {name!r}: {len(columns)} columns {list(columns)}; only "
            "multilabel and regression tasks read several columns"
        )
    size = spec.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
        raise ValueError(f"task {name!r}: size={size!r}; expected an integer >= 1")
    sentinel = spec.get("sentinel")
    if sentinel is not None and not _is_scalar(sentinel):
        raise ValueError(f"task {name!r}: sentinel={sentinel!r}; expected one number or text")
    classes = spec.get("classes")
    if classes is not None:
        classes = _check_classes(name, kind, size, classes)
    relative = spec.get("relative_to")
    if relative is not None:
        if kind != "regression":
            raise ValueError(
                f"task {name!r}: relative_to applies to regression tasks, not {kind!r}"
            )
        if isinstance(relative, bool) or not isinstance(relative, str | int) or relative == "":
            raise ValueError(
                f"task {name!r}: relative_to={relative!r}; expected an input feature or column "
                "name (an NPZ sequence: a feature index)"
            )
    return TaskSpec(
        name, kind, columns, size, spec.get("sentinel"), classes, spec.get("loss"), relative
    )


def _check_classes(name: str, kind: str, size: int | None, classes: Any) -> tuple[Any, ...]:
    """``classes`` as a tuple, checked against the task's kind and size."""
    if kind not in ("binary", "multiclass"):
        raise ValueError(
            f"task {name!r}: classes apply to binary and multiclass tasks, not {kind!r}"
        )
    if isinstance(classes, str | bytes) or not isinstance(classes, Sequence):
        raise ValueError(f"task {name!r}: classes={classes!r}; expected a list of class names")
    for value in classes:
        if not _is_scalar(value):
            raise ValueError(f"task {name!r}: class {value!r} in classes; expected text or numbers")
    keys = [_key(c) for c in classes]
    repeated = [k for k, n in Counter(keys).items() if n > 1]
    if repeated:
        raise ValueError(f"task {name!r}: class {repeated[0]!r} is listed twice in classes")
    wanted = 2 if kind == "binary" else size
    if wanted is not None and len(classes) != wanted:
        raise ValueError(
            f"task {name!r}: {len(classes)} classes {list(classes)}; expected {wanted}"
        )
    if len(classes) < 2:
        raise ValueError(f"task {name!r}: classes={list(classes)}; expected at least 2")
    return tuple(classes)


# ------------------------------------------------------------------------------ files


def resolve_path(path: str | Path) -> Path:
    """``path`` as a file that exists; ``attnmtl:NAME`` names a shipped example file."""
    text = str(path)
    if text.startswith(SHIPPED):
        folder = resources.files("attnmtl") / "configs" / "data"
        found = Path(str(folder / text[len(SHIPPED) :]))
        if not found.is_file():
            shipped = (
                sorted(p.name for p in Path(str(folder)).glob("*"))
                if Path(str(folder)).is_dir()
                else []
            )
            raise ValueError(f"no shipped data file {text!r}; shipped: {', '.join(shipped)}")
        return found
    found = Path(text).expanduser()
    if not found.is_file():
        raise ValueError(f"data file not found: {text!r}")
    return found


def file_format(path: Path, format: str | None) -> str:
    """``format`` if given, else the format of ``path``'s extension."""
    if format is not None:
        if format not in FORMATS:
            raise ValueError(f"format={format!r}; expected one of: {', '.join(FORMATS)}")
        return format
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"cannot tell the format of {str(path)!r} from its extension; set "
            f"format to one of: {', '.join(FORMATS)}"
        )
    return fmt


def _is_scalar(value: Any) -> bool:
    """Whether ``value`` can name a class or a sentinel: text, or a finite number or a bool."""
    if isinstance(value, str):
        return True
    return isinstance(value, int | float) and math.isfinite(value)


def _shown(value: Any) -> str:
    """``repr`` of a cell, NumPy scalars shown as the Python value they hold."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _one_line(err: BaseException) -> str:
    """The first line of an error's message."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _check_names(names: Sequence[str], needed: Mapping[str, str], where: str) -> None:
    """Raise if ``names`` repeats a name or lacks one of ``needed`` (name → who needs it)."""
    repeated = [n for n, count in Counter(names).items() if count > 1 and n]
    if repeated:
        raise ValueError(f"{where}: duplicate column name {repeated[0]!r}; names must be unique")
    for name, user in needed.items():
        if name not in names:
            shown = (str(n) if str(n) and str(n).isprintable() else repr(n) for n in names)
            raise ValueError(
                f"{where}: no column {name!r} (needed by {user}); available: {', '.join(shown)}"
            )


def _parquet() -> Any:
    """``pyarrow.parquet``, or a one-line error naming the extra that brings it."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError("reading Parquet needs pyarrow: pip install 'attnmtl[parquet]'") from None
    return pq


def header(path: Path, fmt: str) -> list[str]:
    """The column names of a CSV or Parquet file (one-line errors)."""
    where = str(path)
    if fmt == "csv":
        try:
            with path.open(newline="", encoding="utf-8-sig") as handle:
                names = next(csv.reader(handle), None)
        except (csv.Error, UnicodeError) as err:
            raise ValueError(f"{where}: cannot parse as CSV ({_one_line(err)})") from None
        if not names:
            raise ValueError(f"{where}: empty table (no header row)")
        return names
    pq = _parquet()
    from pyarrow import ArrowException

    try:
        return list(pq.read_schema(path).names)
    except (ArrowException, OSError) as err:
        raise ValueError(f"{where}: cannot read as Parquet ({_one_line(err)})") from None


def _read_frame(path: Path, fmt: str, needed: Mapping[str, str]) -> pd.DataFrame:
    """The ``needed`` columns of a CSV (read as text) or Parquet file."""
    where = str(path)
    _check_names(header(path, fmt), needed, where)
    if fmt == "csv":
        try:
            with warnings.catch_warnings():  # a row longer than the header is an error
                warnings.simplefilter("error", pd.errors.ParserWarning)
                frame = pd.read_csv(
                    path, dtype=str, index_col=False, keep_default_na=False, na_values=[""]
                )[list(needed)]
        except (csv.Error, pd.errors.ParserError, pd.errors.ParserWarning, UnicodeError) as err:
            raise ValueError(f"{where}: cannot parse as CSV ({_one_line(err)})") from None
    else:
        frame = _parquet().read_table(path, columns=list(needed)).to_pandas()
    if len(frame) == 0:
        raise ValueError(f"{where}: empty table (no data rows)")
    return frame


def _column_array(series: pd.Series) -> np.ndarray:
    """A column as float64 (numeric or boolean columns, missing → NaN) or as objects."""
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    return series.to_numpy(dtype=object)


def _to_numbers(values: np.ndarray) -> tuple[np.ndarray, pd.Series | None]:
    """float64 numbers (NaN where not a number) and, for text, the stripped text."""
    if values.dtype.kind in "biuf":
        return values.astype(np.float64), None
    text = pd.Series(values.ravel()).astype("string").str.strip()
    numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return numbers.reshape(values.shape), text


def _table_inputs(
    frame: pd.DataFrame, columns: Sequence[str], where: str, rows: Rows, problems: Problems
) -> np.ndarray:
    """The input columns as float32 (N, F); each non-finite cell is a problem."""
    out = np.empty((len(frame), len(columns)), dtype=np.float32)
    for j, name in enumerate(columns):
        raw = _column_array(frame[name])
        wide = _to_numbers(raw)[0]
        with np.errstate(over="ignore"):  # beyond float32 becomes inf, reported below
            numbers = wide.astype(np.float32)

        def line(row: int, raw: np.ndarray = raw, wide: np.ndarray = wide, name: str = name) -> str:
            cell = raw[row]
            shown = "an empty or NaN cell" if pd.isna(cell) else _shown(cell)
            beyond = " (beyond the float32 range)" if np.isfinite(wide[row]) else ""
            return (
                f"{where}: input column {name!r}, {rows.at(row)}: {shown} is not a finite "
                f"number{beyond}"
            )

        problems.cells(f"{where} column {name!r}", np.flatnonzero(~np.isfinite(numbers)), line)
        out[:, j] = np.where(np.isfinite(numbers), numbers, 0.0)
    return out


InputColumns = str | Sequence[str] | Mapping[str, str | Sequence[str]]


def column_groups(
    inputs: Mapping[str, str | Sequence[str]], names: Sequence[str], where: str
) -> dict[str, list[str]]:
    """Feature → its columns, one per step, for a sequence stored as column blocks: a list
    of columns, or a glob pattern over the header (``a_t*``) matched in file order. Every
    feature must have the same number of steps, and no column may serve two features."""
    groups: dict[str, list[str]] = {}
    for feature, spec in inputs.items():
        if isinstance(spec, str):
            columns = [c for c in names if fnmatch.fnmatchcase(c, spec)]
            if not columns:
                raise ValueError(f"{where}: inputs.{feature}={spec!r} matches no column")
        else:
            columns = [str(c) for c in spec]
            if not columns:
                raise ValueError(f"{where}: inputs.{feature} lists no column")
        groups[str(feature)] = columns
    steps = {f: len(c) for f, c in groups.items()}
    if len(set(steps.values())) > 1:
        raise ValueError(
            f"{where}: the input features have different numbers of steps {steps}; each "
            "feature needs one column per step"
        )
    seen: dict[str, str] = {}
    for feature, columns in groups.items():
        for column in columns:
            if column in seen:
                raise ValueError(
                    f"{where}: column {column!r} is in inputs.{seen[column]} and inputs.{feature}"
                )
            seen[column] = feature
    return groups


def flat_columns(inputs: InputColumns, path: Path, fmt: str) -> tuple[list[str], int | None]:
    """The input columns in reading order, and the number of features when they form a
    sequence of column blocks (feature-major: every step of feature 1, then of feature 2)."""
    if isinstance(inputs, str):
        return [inputs], None
    if isinstance(inputs, Mapping):
        groups = column_groups(inputs, header(path, fmt), str(path))
        return [c for columns in groups.values() for c in columns], len(groups)
    return list(inputs), None


def _as_sequence(table: np.ndarray, features: int) -> np.ndarray:
    """(N, F·T) feature-major columns → (N, T, F)."""
    n = len(table)
    return np.ascontiguousarray(table.reshape(n, features, -1).transpose(0, 2, 1))


def read_table(
    path: Path,
    fmt: str,
    inputs: InputColumns,
    specs: Sequence[TaskSpec],
    problems: Problems,
    id_column: str | None = None,
) -> Source:
    """A CSV or Parquet file: input columns → (N, F) float32 (a sequence of column blocks →
    (N, T, F)), task columns → raw labels; bad input cells go to ``problems``, named by file
    line (CSV) or row and by ``id_column``'s value when the file has that column."""
    inputs, features = flat_columns(inputs, path, fmt)
    needed = {name: "inputs" for name in inputs}
    if id_column is not None and id_column in header(path, fmt):
        needed.setdefault(id_column, "id_columns")
    for spec in specs:
        for column in spec.columns:
            if column in inputs:
                raise ValueError(
                    f"column {column!r} is both an input and the label of task {spec.name!r}"
                )
            needed.setdefault(column, f"task {spec.name!r}")
    frame = _read_frame(path, fmt, needed)
    rows = Rows(fmt)
    if id_column is not None and id_column in frame:
        rows = Rows(fmt, frame[id_column].to_numpy(dtype=object), id_column)
    labels = {}
    for spec in specs:
        arrays = [_column_array(frame[c]) for c in spec.columns]
        labels[spec.name] = arrays[0] if len(arrays) == 1 else np.stack(arrays, 1)  # (N, C)
    table = _table_inputs(frame, inputs, str(path), rows, problems)
    x = table if features is None else _as_sequence(table, features)
    return Source(str(path), x, None, labels, rows)


def read_npz(
    path: Path,
    inputs: str,
    layout: str,
    lengths: str | None,
    specs: Sequence[TaskSpec],
    id_column: str | None = None,
) -> Source:
    """An NPZ archive: the ``inputs`` array, optional ``lengths``, one array per task (and the
    ``id_column`` array, when present, to name rows in errors)."""
    where = str(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{where}: cannot read as NPZ ({_one_line(err)})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{where}: holds one array, expected an .npz archive of named arrays")
    with archive:

        def get(name: str, user: str) -> np.ndarray:
            if name not in archive.files:
                raise ValueError(
                    f"{where}: no array {name!r} (needed by {user}); available: "
                    f"{', '.join(archive.files)}"
                )
            try:
                return np.asarray(archive[name])
            except ValueError:
                raise ValueError(
                    f"{where}: array {name!r} holds Python objects; expected "
                    "numbers or text (NPZ is read with allow_pickle=False)"
                ) from None

        x = get(inputs, "inputs")
        for spec in specs:
            if spec.columns[0] == inputs:
                raise ValueError(f"array {inputs!r} is both the inputs and task {spec.name!r}")
        labels = {s.name: get(s.columns[0], f"task {s.name!r}") for s in specs}
        lens = None if lengths is None else get(lengths, "lengths")
        ids = get(id_column, "id_columns") if id_column in archive.files else None
    if x.dtype.kind not in "biuf":
        raise ValueError(f"{where}: inputs array {inputs!r} has dtype {x.dtype}; expected numbers")
    n = x.shape[0] if x.ndim else 0
    if n == 0:
        raise ValueError(f"{where}: inputs array {inputs!r} has no samples (shape {x.shape})")
    if x.size == 0:
        raise ValueError(f"{where}: inputs array {inputs!r} has shape {x.shape}; expected values")
    for name, array in [*((s.columns[0], labels[s.name]) for s in specs), (lengths, lens)]:
        if array is not None and (array.ndim == 0 or array.shape[0] != n):
            raise ValueError(
                f"{where}: array {name!r} has shape {array.shape}; expected {n} "
                f"rows like inputs {inputs!r}"
            )
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, reported below
        x32 = x.astype(np.float32)
    bad = np.argwhere(~np.isfinite(x32))
    if bad.size:
        index = tuple(int(i) for i in bad[0])
        raise ValueError(
            f"{where}: inputs array {inputs!r} holds {x[index]} at {index}; expected finite "
            "numbers (float32)"
        )
    x = _shape_inputs(x32, layout, f"{where}: inputs array {inputs!r}")
    if lens is not None:
        lens = _check_lengths(lens, x.shape[1], f"{where}: lengths array {lengths!r}")
    rows = Rows("npz")
    if ids is not None and ids.ndim == 1 and len(ids) == n:
        rows = Rows("npz", ids, id_column)
    return Source(where, x, lens, labels, rows)


def _shape_inputs(x: np.ndarray, layout: str, what: str) -> np.ndarray:
    """(N, ...) inputs in the layout's stored shape; one missing F or C axis is added."""
    want = LAYOUT_NDIM[layout]
    if x.ndim == want - 1 and layout != "table":
        # sequence (N, T) → (N, T, 1); image (N, H, W) → (N, 1, H, W)
        return x[..., None] if layout == "sequence" else x[:, None]
    if x.ndim != want:
        raise ValueError(f"{what} has shape {x.shape}; layout {layout!r} expects {want} axes")
    return x


def _check_lengths(lens: np.ndarray, steps: int, what: str) -> np.ndarray:
    """Sequence lengths as int64 (N,), each in [1, T]."""
    if lens.ndim != 1 or lens.dtype.kind not in "iu":
        raise ValueError(
            f"{what} has shape {lens.shape} and dtype {lens.dtype}; expected integers of shape (N,)"
        )
    bad = np.flatnonzero((lens < 1) | (lens > steps))
    if bad.size:
        raise ValueError(f"{what}, row {bad[0]}: length {lens[bad[0]]} is outside [1, {steps}]")
    return lens.astype(np.int64)


# ----------------------------------------------------------------------------- labels


def _key(value: Any) -> str:
    """A class name or sentinel as text: integral numbers without '.0', text stripped."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer) or (
        isinstance(value, float | np.floating) and float(value).is_integer()
    ):
        return str(int(value))
    return str(value).strip()


def _as_float(value: Any) -> float | None:
    """``value`` as a float, or None when it is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _where(spec: TaskSpec, source: str, rows: Rows, flat_index: int, width: int) -> str:
    """'FILE: task T, column C, line L (id X)' of a flat index into an (N, width) label array."""
    column = spec.columns[flat_index % width] if len(spec.columns) == width else spec.columns[0]
    return f"{source}: task {spec.name!r}, column {column!r}, {rows.at(flat_index // width)}"


def _class_cells(
    flat: np.ndarray, spec: TaskSpec, source: str, width: int, rows: Rows, problems: Problems
) -> tuple[np.ndarray, np.ndarray]:
    """Class ids and missing flags of flat cells, by the task's ``classes`` list; each value
    outside it is one problem (its first row and how many rows hold it)."""
    assert spec.classes is not None
    by_key = {_key(c): i for i, c in enumerate(spec.classes)}
    by_number = {f: i for i, c in enumerate(spec.classes) if (f := _as_float(c)) is not None}
    codes, uniques = pd.factorize(pd.Series(flat), use_na_sentinel=True)
    ids = np.zeros(len(uniques) + 1)  # the last entry serves code -1 (missing)
    missing = np.ones(len(uniques) + 1, dtype=bool)
    sentinel = None if spec.sentinel is None else _key(spec.sentinel)
    sentinel_number = None if spec.sentinel is None else _as_float(spec.sentinel)
    for j, value in enumerate(uniques):
        number = _as_float(value)
        if _key(value) in ("", sentinel) or (
            number is not None and (math.isnan(number) or number == sentinel_number)
        ):
            continue
        found = by_key.get(_key(value), by_number.get(number) if number is not None else None)
        if found is None:
            at = np.flatnonzero(codes == j)
            also = f" (and {len(at) - 1} more rows)" if len(at) > 1 else ""
            problems.add(
                f"{source} task {spec.name!r}",
                f"{_where(spec, source, rows, int(at[0]), width)}: label {_shown(value)}{also} "
                f"is not one of the declared classes {list(spec.classes)}",
            )
            continue
        ids[j], missing[j] = found, False
    return ids[codes], missing[codes]


def _number_cells(
    flat: np.ndarray, spec: TaskSpec, source: str, width: int, rows: Rows, problems: Problems
) -> tuple[np.ndarray, np.ndarray]:
    """Numbers and missing flags of flat cells: empty, NaN or the sentinel is missing; other
    text is a problem."""
    numbers, text = _to_numbers(flat)
    hit = np.zeros(numbers.shape, dtype=bool)
    if spec.sentinel is not None:
        target = _as_float(spec.sentinel)
        if target is not None:
            hit |= numbers == target
        if text is not None:
            hit |= text.fillna("").eq(_key(spec.sentinel)).to_numpy(dtype=bool)
    if text is not None:
        empty = text.fillna("").str.lower().isin(["", "nan"]).to_numpy(dtype=bool)
        bad = np.flatnonzero(np.isnan(numbers) & ~empty & ~hit)
        problems.cells(
            f"{source} task {spec.name!r}",
            bad,
            lambda i: (
                f"{_where(spec, source, rows, i, width)}: label {_shown(flat[i])} is not "
                "a number; declare it as the task's sentinel if it means unlabelled, or list the "
                "task's classes"
            ),
        )
    missing = np.isnan(numbers) | hit
    return np.where(missing, 0.0, numbers), missing


def parse_labels(
    raw: np.ndarray,
    spec: TaskSpec,
    source: str,
    rows: Rows | None = None,
    problems: Problems | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One task's label values (float64, 0 where unlabelled) and its (N,) label mask.

    A sample is unlabelled when all its cells for the task are missing; a sample with some
    cells missing and others not is a problem (a mask is per sample and task, not per cell).
    Cell problems go to ``problems``; without it, they are raised at once.
    """
    own = problems is None
    problems = Problems() if problems is None else problems
    rows = Rows("npz") if rows is None else rows
    single = spec.kind in ("binary", "multiclass")
    if (
        raw.ndim not in (1, 2)
        or (single and raw.ndim != 1)
        or (spec.kind == "multilabel" and raw.ndim != 2)
    ):
        expected = "(N,)" if single else "(N, C)" if spec.kind == "multilabel" else "(N,) or (N, C)"
        raise ValueError(
            f"{source}: task {spec.name!r} labels have shape {raw.shape}; expected {expected}"
        )
    n, width = raw.shape[0], 1 if raw.ndim == 1 else raw.shape[1]
    cells = _class_cells if spec.classes is not None else _number_cells
    values, missing = cells(raw.reshape(-1), spec, source, width, rows, problems)
    values, missing = values.reshape(n, width), missing.reshape(n, width)  # (N, C)
    mask: np.ndarray = np.asarray(~missing.all(axis=1))
    partial = np.flatnonzero(missing.any(1) & mask)
    problems.cells(
        f"{source} task {spec.name!r}",
        partial,
        lambda r: (
            f"{source}: task {spec.name!r}, {rows.at(r)}: some of its {width} label "
            "cells are empty and others not; label all of them or none"
        ),
    )
    mask[partial] = False
    _check_values(values, mask, spec, source, rows, problems)
    if own:
        problems.raise_any()
    return (values if raw.ndim == 2 else values[:, 0]), mask


def _check_values(
    values: np.ndarray,
    mask: np.ndarray,
    spec: TaskSpec,
    source: str,
    rows: Rows,
    problems: Problems,
) -> None:
    """A problem for each labelled (N, C) value that does not fit the task's kind (and
    declared size); such a sample is then read as unlabelled."""
    if spec.kind in ("binary", "multilabel"):
        bad, wanted = ~np.isin(values, (0.0, 1.0)), "0 or 1"
    elif spec.kind == "multiclass":
        with np.errstate(invalid="ignore"):  # inf % 1 is NaN: already bad
            bad = ~np.isfinite(values) | (values < 0) | (np.mod(values, 1.0) != 0)
        wanted = "a class id (an integer >= 0)"
        if spec.size is not None:
            bad |= values >= spec.size
            wanted = f"a class id in [0, {spec.size - 1}]"
        else:  # the size is inferred from the largest label: keep it sane
            bad |= values >= MAX_INFERRED_CLASSES
    else:
        bad = ~np.isfinite(values) | (np.abs(values) > FLOAT32_MAX)
        wanted = "a finite number (float32)"
    width = values.shape[1]
    flat = np.flatnonzero((bad & mask[:, None]).reshape(-1))

    def line(i: int) -> str:
        value = values.reshape(-1)[i]
        expected = wanted
        if spec.kind == "multiclass" and spec.size is None and value >= MAX_INFERRED_CLASSES:
            expected = f"a class id below {MAX_INFERRED_CLASSES} (declare size for more classes)"
        return f"{_where(spec, source, rows, i, width)}: label {value:g} is not {expected}"

    problems.cells(f"{source} task {spec.name!r}", flat, line)
    mask[np.unique(flat // width)] = False  # reported: read as unlabelled meanwhile


def make_task(
    spec: TaskSpec, parsed: Sequence[tuple[np.ndarray, np.ndarray]], sources: Sequence[str]
) -> Task:
    """The :class:`Task` of ``spec``; a multiclass size not declared is the largest label + 1."""
    if sum(int(mask.sum()) for _, mask in parsed) == 0:
        raise ValueError(f"task {spec.name!r} has no labelled sample in {', '.join(sources)}")
    widths = {1 if values.ndim == 1 else values.shape[1] for values, _ in parsed}
    if len(widths) > 1:
        raise ValueError(
            f"task {spec.name!r} has {sorted(widths)} label columns across "
            f"{', '.join(sources)}; expected the same in every file"
        )
    size = spec.size
    if spec.kind in ("multilabel", "regression"):
        width = widths.pop()
        if spec.size is not None and spec.size != width:
            raise ValueError(
                f"task {spec.name!r}: size={spec.size} but its labels have {width} columns"
            )
        size = width
    elif spec.classes is not None:
        size = len(spec.classes) if spec.kind == "multiclass" else 1
    elif spec.kind == "multiclass" and size is None:
        size = 1 + int(max(values[mask].max() for values, mask in parsed if mask.any()))
        if size < 2:
            raise ValueError(
                f"task {spec.name!r}: every label is class 0, so the inferred "
                "size is 1; declare size (>= 2)"
            )
    kind = cast(TaskKind, spec.kind)
    return Task(spec.name, kind, 1 if size is None else size, spec.loss)


# ---------------------------------------------------------------------------- builder


def _dataset(
    source: Source,
    tasks: Sequence[Task],
    parsed: Mapping[str, tuple[np.ndarray, np.ndarray]],
    layout: str,
) -> MultiTaskDataset:
    """The samples of one file as a data set (labels in each task's dtype and shape)."""
    n = source.inputs.shape[0]
    labels = {
        t.name: torch.as_tensor(parsed[t.name][0].reshape(t.label_shape(n)), dtype=t.label_dtype())
        for t in tasks
    }
    masks = {t.name: torch.as_tensor(parsed[t.name][1]) for t in tasks}
    lengths = None if source.lengths is None else torch.as_tensor(source.lengths)
    inputs = torch.as_tensor(source.inputs)
    return MultiTaskDataset(inputs, labels, tasks, masks, lengths, cast(Layout, layout))


VAL_SPLITS = ("random", "last")
SPLIT_VALUES = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


def check_split_values(values: Mapping[str, Sequence[str]] | None) -> dict[str, tuple[str, ...]]:
    """``split_values`` checked: keys train, val, test; each a list of distinct strings."""
    if values is None:
        return dict(SPLIT_VALUES)
    unknown = [k for k in values if k not in SPLIT_VALUES]
    if unknown or "train" not in values or "test" not in values:
        raise ValueError(
            f"split_values={dict(values)!r}; expected train and test (and optionally val) "
            "mapped to lists of the split column's values"
        )
    bad = [k for k, vs in values.items() if isinstance(vs, str) or not isinstance(vs, Sequence)]
    if bad:
        raise ValueError(
            f"split_values.{bad[0]}={values[bad[0]]!r}; expected a list of the split column's "
            "values"
        )
    out = {k: tuple(str(v) for v in vs) for k, vs in values.items()}
    seen = [v for vs in out.values() for v in vs]
    repeated = sorted({v for v in seen if seen.count(v) > 1})
    if repeated:
        raise ValueError(f"split_values: {repeated[0]!r} stands for more than one split")
    return out


def _side_columns(
    path: Path, fmt: str, columns: Sequence[str], role: str = "the split/time columns"
) -> dict[str, np.ndarray]:
    """Row-aligned columns (NPZ: 1-D arrays of one length) that are neither inputs nor
    labels, as read; ``role`` names them in errors."""
    if not columns:
        return {}
    if fmt == "npz":
        with np.load(path, allow_pickle=False) as archive:
            missing = [c for c in columns if c not in archive.files]
            if missing:
                raise ValueError(
                    f"{path}: no array {missing[0]!r} (needed by {role}); available: "
                    f"{', '.join(archive.files)}"
                )
            arrays = {c: np.asarray(archive[c]) for c in columns}
            rows = len(archive[archive.files[0]]) if archive.files else 0
        for name, array in arrays.items():
            if array.ndim != 1 or len(array) != rows:
                raise ValueError(
                    f"{path}: array {name!r} has shape {array.shape}; expected ({rows},), one "
                    "value per sample"
                )
        return arrays
    frame = _read_frame(path, fmt, {c: role for c in columns})
    return {c: frame[c].to_numpy(dtype=object) for c in columns}


def _split_groups(
    raw: np.ndarray, values: Mapping[str, Sequence[str]], column: str, where: str
) -> dict[str, torch.Tensor]:
    """Row indices per split by ``column``'s values; an unknown value is an error naming it."""
    text = pd.Series(raw.ravel()).astype("string").str.strip().fillna("")
    meaning = {v: split for split, vs in values.items() for v in vs}
    bad = sorted(set(text) - set(meaning))
    if bad:
        first = int(np.flatnonzero(text.to_numpy() == bad[0])[0])
        counts = text.value_counts()
        shown = ", ".join(f"{v!r} ({counts[v]} rows)" for v in bad[:5])
        raise ValueError(
            f"{where}: split column {column!r}, row {first}: {shown} mean no split; expected "
            f"one of {sorted(meaning)} (split_values)"
        )
    splits = text.map(meaning).to_numpy()
    groups = {s: torch.as_tensor(np.flatnonzero(splits == s)) for s in ("train", "val", "test")}
    for split in ("train", "test"):
        if len(groups[split]) == 0:
            raise ValueError(
                f"{where}: split column {column!r} has no {split} row (values {values[split]})"
            )
    return {s: idx for s, idx in groups.items() if len(idx)}


def _time_order(raw: np.ndarray, column: str, where: str) -> np.ndarray:
    """Each row's rank in time by ``column`` (numbers or parseable dates), ties by file order."""
    numbers = pd.to_numeric(pd.Series(raw), errors="coerce")
    if numbers.isna().any():
        numbers = pd.to_datetime(pd.Series(raw), errors="coerce")
        if numbers.isna().any():
            row = int(np.flatnonzero(numbers.isna().to_numpy())[0])
            raise ValueError(
                f"{where}: time column {column!r}, row {row}: {_shown(raw[row])} is neither a "
                "number nor a date"
            )
        numbers = numbers.astype("int64")
    return np.argsort(np.argsort(numbers.to_numpy(), kind="stable"), kind="stable")


def _carve_val(
    train: torch.Tensor,
    fraction: float,
    how: str,
    order: np.ndarray | None,
    seed: int,
    where: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) rows of ``train``: a random ``fraction``, or its last ``fraction`` in time
    (``order``, else file order)."""
    if not 0 < fraction < 1:
        raise ValueError(f"val_fraction={fraction!r}; expected a share in (0, 1)")
    if how == "random":
        parts = _carve(len(train), {"val": fraction}, seed, where)
        return train[parts["train"]], train[parts["val"]]
    count = max(1, round(fraction * len(train)))
    if len(train) < count + 1:
        raise ValueError(f"{where}: {len(train)} training rows are too few to set aside validation")
    ranked = train if order is None else train[np.argsort(order[train.numpy()], kind="stable")]
    return ranked[:-count].sort().values, ranked[-count:].sort().values


def _carve(
    n: int, fractions: Mapping[str, float], seed: int, where: str
) -> dict[str, torch.Tensor]:
    """Seeded random index sets: one per fraction (at least 1 sample each), and the rest."""
    if n < len(fractions) + 1:
        raise ValueError(f"{where}: {n} rows are too few to split into train and {list(fractions)}")
    shares = [1.0 - sum(fractions.values()), *fractions.values()]
    one_stratum = np.zeros(n, dtype=np.int64)  # a plain random split
    parts = stratified_split(one_stratum, shares, np.random.default_rng(seed))
    return {
        name: torch.as_tensor(index)
        for name, index in zip(["train", *fractions], parts, strict=True)
    }


def _rebuild(
    data: MultiTaskDataset,
    inputs: torch.Tensor | None = None,
    labels: Mapping[str, torch.Tensor] | None = None,
) -> MultiTaskDataset:
    """``data`` with new inputs and/or labels (masks, lengths and layout kept)."""
    return MultiTaskDataset(
        data.inputs if inputs is None else inputs,
        data.labels if labels is None else labels,
        list(data.tasks.values()),
        data.label_mask,
        data.lengths,
        data.layout,
        data.meta,
        data.anchors,
    )


def _class_notes(
    specs: Sequence[TaskSpec],
    tasks: Sequence[Task],
    parsed: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]],
) -> list[str]:
    """A note per multiclass task whose class set was inferred (no ``size``, no ``classes``):
    its classes, and the ones with no or very few rows (a stray label is the usual cause)."""
    notes = []
    for spec, task in zip(specs, tasks, strict=True):
        if spec.kind != "multiclass" or spec.size is not None or spec.classes is not None:
            continue
        labels = np.concatenate(
            [split[spec.name][0][split[spec.name][1]] for split in parsed.values()]
        )
        counts = np.bincount(labels.astype(np.int64), minlength=task.size)
        size = task.size
        shown = "{" + ",".join(map(str, range(size))) + "}" if size <= 12 else f"{{0,…,{size - 1}}}"
        rare = [
            f"class {c} has {'no' if n == 0 else n} row{'s' if n != 1 else ''}"
            for c, n in enumerate(counts.tolist())
            if n < max(1.0, RARE_CLASS * len(labels))
        ]
        note = f"{spec.name}: {task.size} classes {shown} inferred from its labels"
        if rare:
            note += "; " + ", ".join(rare[:5])
        notes.append(note + " (declare size or classes to fix the set)")
    return notes


def _scale_note(train: MultiTaskDataset) -> list[str]:
    """A note when inputs are not standardised and their features' scales differ by 1000×."""
    x = train.inputs
    assert isinstance(x, torch.Tensor)
    rows = x.movedim(1, -1).reshape(-1, x.shape[1]) if train.layout == "image" else x
    std = rows.reshape(-1, rows.shape[-1]).double().std(0, correction=0)
    live = std[std > 0]
    if len(live) < 2 or float(live.max() / live.min()) < 1000:
        return []
    return [
        f"standardize is off and the input features' scales differ by "
        f"{float(live.max() / live.min()):.0f}× (std {float(live.min()):.3g} to "
        f"{float(live.max()):.3g}): a model sees the large ones first; set standardize: true"
    ]


def _relative_index(
    spec: TaskSpec, inputs: InputColumns, layout: str, features: int, where: str
) -> int:
    """The input feature (sequence) or column (table) index a task's ``relative_to`` names."""
    target = spec.relative_to
    if layout == "image":
        raise ValueError(f"task {spec.name!r}: relative_to applies to sequences and tables")
    if isinstance(inputs, Mapping):  # a sequence of column blocks: named features
        names = [str(k) for k in inputs]
    elif isinstance(inputs, str):  # an NPZ array: features by index
        names = []
    else:
        names = list(inputs)
    if isinstance(target, str) and target in names:
        return names.index(target)
    if isinstance(target, int) and not names and 0 <= target < features:
        return target
    expected = (
        f"one of the input {'features' if isinstance(inputs, Mapping) else 'columns'} {names}"
        if names
        else f"a feature index in [0, {features - 1}] of the NPZ inputs"
    )
    raise ValueError(f"{where}: task {spec.name!r}: relative_to={target!r}; expected {expected}")


def _window_split(
    data: MultiTaskDataset, window: Window | None, relative: Mapping[str, int]
) -> MultiTaskDataset:
    """One split with its windows transformed and relative targets taken to their anchors
    (see :mod:`attnmtl.data.windows`); the raw inputs stay in ``meta['raw_inputs']``."""
    raw = data.inputs
    assert isinstance(raw, torch.Tensor)
    anchor = anchors(raw, data.lengths, data.layout, window, relative)
    labels = dict(data.labels)
    for name, pair in anchor.items():
        mask = data.label_mask[name].view(-1, *[1] * (labels[name].ndim - 1))
        moved = from_anchor(labels[name].double(), pair.double()).float()
        labels[name] = torch.where(mask, moved, labels[name])  # fillers stay 0
    meta = dict(data.meta)
    inputs = raw
    if window is not None and window.changes_inputs:
        inputs = transform_windows(raw, data.lengths, window)
        meta["raw_inputs"] = raw
    return MultiTaskDataset(
        inputs,
        labels,
        list(data.tasks.values()),
        data.label_mask,
        data.lengths,
        data.layout,
        meta,
        anchor,
    )


def _standardize_inputs(splits: dict[str, MultiTaskDataset]) -> dict[str, list[float]]:
    """Shift and scale every feature (channel for images) by the train split's mean and std."""
    train = splits["train"]
    x = train.inputs
    assert isinstance(x, torch.Tensor)
    if train.layout == "image":
        rows = x.movedim(1, -1).reshape(-1, x.shape[1])  # (N·H·W, C)
    elif train.lengths is not None:
        rows = x[torch.arange(x.shape[1]) < train.lengths[:, None]]  # (valid steps, F)
    else:
        rows = x.reshape(-1, x.shape[-1])  # (N[·T], F)
    mean = rows.mean(0)
    std = rows.std(0, correction=0)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    for name, data in splits.items():
        inputs = data.inputs
        assert isinstance(inputs, torch.Tensor)
        scaled = standardize_inputs(inputs, data.lengths, data.layout, mean, std)
        splits[name] = _rebuild(data, inputs=scaled)
    return {"mean": mean.tolist(), "std": std.tolist()}


def standardize_inputs(
    inputs: torch.Tensor, lengths: torch.Tensor | None, layout: str, mean: Any, std: Any
) -> torch.Tensor:
    """``(inputs − mean) / std`` per feature (per channel for images); padding stays as is."""
    shape = (1, -1, 1, 1) if layout == "image" else (-1,)
    mean, std = torch.as_tensor(mean, dtype=inputs.dtype), torch.as_tensor(std, dtype=inputs.dtype)
    scaled = (inputs - mean.view(shape)) / std.view(shape)
    if lengths is not None:  # padding stays as it was
        keep = torch.arange(inputs.shape[1]) < lengths[:, None]  # (N, T)
        scaled = torch.where(keep[..., None], scaled, inputs)
    return scaled


def _standardize_targets(splits: dict[str, MultiTaskDataset]) -> dict[str, dict[str, list[float]]]:
    """Standardise each regression output by its labelled training values' mean and std."""
    train = splits["train"]
    stats = {}
    for name, task in train.tasks.items():
        if task.kind != "regression":
            continue
        values = train.labels[name][train.label_mask[name]].double().numpy()
        if len(values) == 0:
            raise ValueError(f"task {name!r} has no labelled training sample to standardise by")
        pairs = [standardisation(column, name) for column in values.reshape(len(values), -1).T]
        stats[name] = {"mean": [m for m, _ in pairs], "std": [s for _, s in pairs]}
    for split, data in splits.items():
        labels = dict(data.labels)
        for name, pair in stats.items():
            mean, std = torch.tensor(pair["mean"]), torch.tensor(pair["std"])
            if labels[name].ndim == 1:
                mean, std = mean[0], std[0]
            scaled = (labels[name] - mean) / std
            mask = data.label_mask[name].view(-1, *[1] * (scaled.ndim - 1))
            labels[name] = torch.where(mask, scaled, labels[name]).float()  # fillers stay 0
        splits[split] = _rebuild(data, labels=labels)
    return stats


@register_dataset("files")
def build_files(
    path: str | Path,
    inputs: str | Sequence[str] | Mapping[str, str | Sequence[str]],
    tasks: Mapping[str, Mapping[str, Any]],
    format: str | None = None,
    layout: str = "table",
    lengths: str | None = None,
    val_path: str | Path | None = None,
    test_path: str | Path | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    standardize: bool = True,
    standardize_targets: bool = True,
    split_column: str | None = None,
    split_values: Mapping[str, Sequence[str]] | None = None,
    val_split: str = "random",
    time_column: str | None = None,
    id_columns: Sequence[str] = (),
    window: Mapping[str, Any] | None = None,
) -> DataSplits:
    """Train/val/test splits read from user files.

    Args:
        path: the CSV, Parquet or NPZ file (``attnmtl:NAME`` for a shipped example).
        inputs: input column names (CSV/Parquet → a float32 (N, F) table), or the name of
            the NPZ inputs array (N, ...), or — a sequence stored as columns, with ``layout:
            sequence`` — feature → its columns, one per step: a list, or a glob pattern over
            the header matched in file order (``{a: "a_t*", b: "b_t*"}`` → (N, T, 2)).
        tasks: task name → ``kind`` (binary, multiclass, multilabel, regression) and optional
            ``column`` (default the task name; a list for multilabel or multi-output
            regression tables; for NPZ an array name), ``size`` (multiclass: inferred as the
            largest label + 1 when absent), ``sentinel`` (a value meaning "not labelled",
            besides empty cells and NaN), ``classes`` (class names in id order; binary: two,
            the first is 0) and ``loss`` (regression).
        format: ``csv``, ``parquet`` or ``npz``; default from each file's extension.
        layout: ``table`` (CSV/Parquet: always), ``sequence`` ((N, T, F); (N, T) gains F = 1)
            or ``image`` ((N, C, H, W); (N, H, W) gains C = 1).
        lengths: NPZ array (N,) of real sequence lengths, each in [1, T].
        val_path: a file for the validation split; else ``val_fraction`` of ``path``.
        test_path: a file for the test split; else ``test_fraction`` of ``path``.
        val_fraction: share of ``path`` set aside at random for validation.
        test_fraction: share of ``path`` set aside at random for testing.
        seed: seed of the random split.
        standardize: scale each input feature (image channel) to zero mean and unit variance
            with the train split's statistics (they are recorded in ``info``); on by default.
            Off, a note is made when the features' scales differ by 1000× or more.
        standardize_targets: standardise each regression output with the mean and std of its
            labelled training values (recorded in ``info``), as the built-in data sets do;
            training sees standard units, metrics and predictions natural ones. On by default.
        split_column: a column (NPZ: an array) of ``path`` saying each row's split, by the
            values in ``split_values``; instead of ``val_path``/``test_path`` and the random
            split. Without validation rows, ``val_fraction`` of the training rows become the
            validation split (``val_split``).
        split_values: split → the values of ``split_column`` that mean it (default: train:
            ``train``; val: ``val``, ``valid``, ``validation``; test: ``test``); any other
            value is an error naming it.
        val_split: how validation rows are carved from the training rows: ``random``, or
            ``last`` — the last ``val_fraction`` of them in file order, or in ``time_column``
            order — so that a time series is validated on its most recent rows, not on rows
            from among the training period (no future rows leak into model selection).
        time_column: a column ordering the rows in time for ``val_split: last`` (numbers, or
            dates and times that pandas parses); file order without it.
        id_columns: identifier columns (an id, a date): read by nothing, allowed in the files
            and in ``attnmtl predict``'s input, which copies them into its output.
        window: time-series preprocessing of each sequence window (``layout: sequence``):
            ``center`` (``none``, ``last``, ``mean``), ``scale`` (divide by the window's std)
            and ``difference`` (first differences); see :mod:`attnmtl.data.windows`. A
            regression task's ``relative_to: FEATURE`` trains it on its target minus that
            feature's window centre (divided by its window scale with ``scale``), and scores
            and predicts ``centre + scale · prediction`` in natural units. Nothing is fitted:
            each window is normalised by its own values, before ``standardize``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}; expected one of: {', '.join(LAYOUTS)}")
    if not tasks:
        raise ValueError("tasks is empty; declare at least one task")
    if seed < 0:
        raise ValueError(f"seed={seed!r}; expected an integer >= 0")
    if lengths is not None and layout != "sequence":
        raise ValueError(f"lengths={lengths!r} applies to layout 'sequence', not {layout!r}")
    windows = None if window is None else Window.parse(window)
    if windows is not None and layout != "sequence":
        raise ValueError(f"window applies to layout 'sequence' (windows of steps), not {layout!r}")
    if windows is not None and windows.difference and lengths is not None:
        raise ValueError(
            "window.difference with lengths (padded sequences) is not supported; difference "
            "the windows before padding them"
        )
    specs = [parse_task_spec(name, spec) for name, spec in tasks.items()]
    names = [inputs] if isinstance(inputs, str) else list(inputs)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"inputs={inputs!r}; expected column names or an NPZ array name")
    blocks = isinstance(inputs, Mapping)  # a sequence stored as one column block per feature
    if blocks and layout != "sequence":
        raise ValueError(
            f"inputs maps features to column blocks, which form a sequence: set layout: "
            f"sequence (got {layout!r})"
        )
    fractions = {
        k: f
        for k, f, p in (("val", val_fraction, val_path), ("test", test_fraction, test_path))
        if p is None
    }
    for key, fraction in fractions.items():
        if not 0 < fraction < 1:
            raise ValueError(
                f"{key}_fraction={fraction!r}; expected a share in (0, 1) when "
                f"{key}_path is not given"
            )
    if sum(fractions.values()) >= 1:
        raise ValueError(f"val_fraction + test_fraction = {sum(fractions.values())}; expected < 1")
    if val_split not in VAL_SPLITS:
        raise ValueError(f"val_split={val_split!r}; expected one of: {', '.join(VAL_SPLITS)}")
    if split_column is not None and (val_path is not None or test_path is not None):
        raise ValueError(
            f"split_column={split_column!r} with val_path/test_path; give the splits one way"
        )
    if time_column is not None and val_split != "last":
        raise ValueError(f"time_column={time_column!r} orders val_split: last; set val_split")
    values = check_split_values(split_values)
    side_columns = [c for c in (split_column, time_column) if c is not None]
    clash = [c for c in (*side_columns, *id_columns) if c in names]
    if clash:
        raise ValueError(f"column {clash[0]!r} is an input and a split, time or id column")

    problems = Problems()  # every cell problem of every file, raised together
    id_column = id_columns[0] if id_columns else None

    def read(file: str | Path) -> tuple[Source, str]:
        found = resolve_path(file)
        fmt = file_format(found, format)
        if fmt == "npz":
            if blocks:
                raise ValueError(f"{found}: column blocks are for CSV/Parquet; NPZ holds arrays")
            if len(names) != 1:
                raise ValueError(f"inputs={names}; an NPZ file takes one inputs array name")
            return read_npz(found, names[0], layout, lengths, specs, id_column), fmt
        if (layout != "table" and not blocks) or lengths is not None:
            raise ValueError(
                f"{str(found)!r} is a {fmt} table: layout must be 'table' (got {layout!r}), "
                f"or 'sequence' with inputs as column blocks ({{feature: 'a_t*'}}), and "
                f"lengths unset (got {lengths!r})"
            )
        source = read_table(found, fmt, inputs if blocks else names, specs, problems, id_column)
        return source, fmt

    main, fmt = read(path)
    sources = {"train": main}
    for split, file in (("val", val_path), ("test", test_path)):
        if file is not None:
            sources[split] = read(file)[0]
            shape, other = main.inputs.shape[1:], sources[split].inputs.shape[1:]
            if shape != other:
                raise ValueError(
                    f"{sources[split].path}: inputs have shape {other} per sample; "
                    f"{main.path} has {shape}"
                )
    parsed = {
        split: {
            s.name: parse_labels(src.labels[s.name], s, src.path, src.rows, problems) for s in specs
        }
        for split, src in sources.items()
    }
    problems.raise_any()
    task_list = [
        make_task(
            s, [parsed[split][s.name] for split in sources], [src.path for src in sources.values()]
        )
        for s in specs
    ]
    data = {
        split: _dataset(src, task_list, parsed[split], layout) for split, src in sources.items()
    }
    side = _side_columns(resolve_path(path), fmt, side_columns)
    order = None if time_column is None else _time_order(side[time_column], time_column, main.path)
    if split_column is not None:
        groups = _split_groups(side[split_column], values, split_column, main.path)
        whole = data["train"]
        data = {split: whole.subset(index) for split, index in groups.items()}
        if "val" not in groups:  # validation rows carved from the training rows
            train, val = _carve_val(
                groups["train"], val_fraction, val_split, order, seed, main.path
            )
            data["train"], data["val"] = whole.subset(train), whole.subset(val)
    elif fractions:
        whole = data["train"]
        rows = torch.arange(len(whole))
        if val_split == "last" and "val" in fractions:  # test at random, then val by time
            rest = {k: v for k, v in fractions.items() if k != "val"}
            parts = _carve(len(whole), rest, seed, main.path) if rest else {"train": rows}
            share = fractions["val"] / (1 - sum(rest.values()))
            train, val = _carve_val(parts["train"], share, "last", order, seed, main.path)
            parts.update(train=train, val=val)
        else:
            parts = _carve(len(whole), fractions, seed, main.path)
        data.update({split: whole.subset(index) for split, index in parts.items()})
    info: dict[str, object] = {
        "path": main.path,
        "format": fmt,
        "inputs": names,
        "split": {
            k: sources[k].path if k in sources else f"{fractions[k]} of {main.path}"
            for k in ("val", "test")
        },
        "seed": seed,
        "num_samples": {k: len(v) for k, v in data.items()},
    }
    if split_column is not None:
        info["split_column"] = split_column
        info["split"] = {
            k: f"{split_column} in {list(values[k])}"
            if k in values and k in groups
            else f"{val_fraction} of the training rows ({val_split})"
            for k in ("val", "test")
        }
    if val_split != "random":
        info["val_split"] = val_split if time_column is None else f"last by {time_column}"
    if id_columns:
        info["id_columns"] = list(id_columns)
    relative = {
        s.name: _relative_index(s, inputs, layout, main.inputs.shape[-1], main.path)
        for s in specs
        if s.relative_to is not None
    }
    if windows is not None or relative:
        data = {split: _window_split(d, windows, relative) for split, d in data.items()}
    if windows is not None:
        info["window"] = windows.as_dict()
    if relative:
        info["relative_to"] = {
            name: {"input": next(s.relative_to for s in specs if s.name == name), "index": j}
            for name, j in relative.items()
        }
    notes = [*_class_notes(specs, task_list, parsed)]
    if standardize:
        info["standardize"] = _standardize_inputs(data)
    else:
        notes += _scale_note(data["train"])
    if notes:
        info["notes"] = notes
    if standardize_targets:
        info["standardize_targets"] = _standardize_targets(data)
    return DataSplits(data["train"], data["val"], data["test"], info)


def read_inputs(
    path: str | Path,
    inputs: InputColumns,
    format: str | None = None,
    layout: str = "table",
    lengths: str | None = None,
    known: Sequence[str] = (),
) -> tuple[np.ndarray, np.ndarray | None]:
    """A file's inputs for prediction, read and checked as training reads them.

    Args:
        path: a CSV, Parquet or NPZ file.
        inputs: the run's input column names (CSV/Parquet) or NPZ inputs array name.
        format: ``csv``, ``parquet`` or ``npz``; default from the extension.
        layout: the run's layout (``table`` for CSV/Parquet).
        lengths: the NPZ lengths array name, when the run had one.
        known: other columns that may be present and are ignored (the run's task columns);
            any other column is an error, as is a missing input column.

    Returns:
        float32 inputs (N, ...) and int64 lengths (N,) or None. Every problem is a one-line
        ValueError naming the file, the column or array, the row and the value.
    """
    found = resolve_path(path)
    fmt = file_format(found, format)
    if fmt == "npz":
        source = read_npz(found, str(inputs), layout, lengths, [])
        return source.inputs, source.lengths
    blocks = isinstance(inputs, Mapping)
    if layout != "table" and not blocks:
        raise ValueError(f"{found}: a {fmt} table cannot hold the run's {layout} inputs; use NPZ")
    names, features = flat_columns(inputs, found, fmt)
    columns = header(found, fmt)
    extra = [c for c in columns if c not in names and c not in known]
    if extra:
        raise ValueError(
            f"{found}: extra column(s) {', '.join(map(repr, extra))}; the run reads the input "
            f"columns {', '.join(names)} (task columns are ignored)"
        )
    frame = _read_frame(found, fmt, {name: "inputs" for name in names})
    problems = Problems()
    table = _table_inputs(frame, names, str(found), Rows(fmt), problems)
    problems.raise_any()
    return (table if features is None else _as_sequence(table, features)), None


def read_columns(
    path: str | Path, columns: Sequence[str], format: str | None = None
) -> dict[str, np.ndarray]:
    """Columns (NPZ: arrays) of a file as read, e.g. the id columns ``attnmtl predict`` copies
    into its output."""
    found = resolve_path(path)
    return _side_columns(found, file_format(found, format), list(columns), "id_columns")
