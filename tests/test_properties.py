"""Property-based tests: whatever the config or data file, a result or a one-line ValueError.

Hypothesis draws YAML-ish config mappings, override strings, raw YAML text, CSV tables and NPZ
arrays; the readers must either accept them or raise ValueError with a one-line message —
never another exception (a KeyError, a TypeError, a RecursionError, a warning turned error).
"""

import copy
import csv
import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, example, find, given, settings
from hypothesis import strategies as st

from attnmtl.data.files import LAYOUT_NDIM, build_files
from attnmtl.run.config import (
    RunConfig,
    apply_overrides,
    load_config,
    parse_config,
    read_yaml,
    shipped_configs,
)

# Derandomized: the same examples on every run, so CI never fails by chance; the @example
# cases are bugs that random campaigns (500-1500 examples per test) found and that stay fixed.
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def result_or_value_error(function, *args, **kwargs):
    """``function(*args, **kwargs)``, or None after a ValueError with a one-line message, or
    — cell problems in data files — a count line and one indented line per problem."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would be a second line on stderr
        try:
            return function(*args, **kwargs)
        except ValueError as err:
            message = str(err)
            first, *rest = message.split("\n")
            assert first, repr(message)
            if rest:  # "N problems in the data:", then each problem, then maybe "... N more"
                assert first.split(" ")[0].isdigit(), repr(message)
                count = int(first.split(" ")[0])
                assert first == f"{count} problems in the data:", repr(message)
                listed = [line for line in rest if not line.startswith("  ... and ")]
                assert len(listed) == min(count, 20), repr(message)
                assert all(line.startswith("  ") and line.strip() for line in rest)
            return None


# ------------------------------------------------------------------------------ configs

SECTION_KEYS = {
    name: sorted(field.annotation.model_fields)
    for name, field in RunConfig.model_fields.items()
    if hasattr(field.annotation, "model_fields")
}
NAMES = ["attention_mtl", "mtan", "equal", "dwa", "files", "mnist1d-mt", "multidigits"]
words = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)
keys = st.one_of(
    st.sampled_from(sorted({k for ks in SECTION_KEYS.values() for k in ks} | set(SECTION_KEYS))),
    words,
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    words,
    st.sampled_from([*NAMES, "a:b", "os:system", "attnmtl:x", "attnmtl.models:MODELS", "../x"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=8,
)
sections = st.fixed_dictionaries(
    {},
    optional={"name": st.sampled_from(NAMES) | words},
).flatmap(lambda base: st.dictionaries(keys, values, max_size=4).map(lambda d: {**d, **base}))
configs = st.dictionaries(
    st.sampled_from([*SECTION_KEYS, "name"]) | words,
    st.one_of(sections, values),
    max_size=5,
)


SHIPPED = {name: read_yaml(path) for name, path in shipped_configs().items()}


def key_paths(node, prefix=()):
    """Every key path into nested mappings, e.g. ("model", "encoder_options", "hidden_dim")."""
    for key, value in node.items():
        yield (*prefix, key)
        if isinstance(value, dict):
            yield from key_paths(value, (*prefix, key))


@st.composite
def edited_configs(draw):
    """A shipped config with up to three edits: a value replaced, a key removed or added."""
    data = copy.deepcopy(SHIPPED[draw(st.sampled_from(sorted(SHIPPED)))])
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(list(key_paths(data)) or [("name",)]))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.integers(0, 2))
        if action == 0:
            parent[path[-1]] = draw(values)
        elif action == 1:
            parent.pop(path[-1], None)
        else:
            parent[draw(keys)] = draw(values)
    return data


@SETTINGS
@given(configs | edited_configs())
@example({"data": {"name": "mnist1d-mt", "a\nb": 1}})  # were two-line messages
@example({"data": {"label_fraction": {"a\nb": "x"}}})
def test_parse_config_gives_a_config_or_a_value_error(data):
    config = result_or_value_error(parse_config, data)
    assert config is None or isinstance(config, RunConfig)


dotted = st.lists(
    st.sampled_from([*SECTION_KEYS, "name", "epochs", "lr", "x"]) | words, min_size=0, max_size=4
).map(".".join)
yaml_text = st.one_of(
    words,
    st.sampled_from(
        [
            "[1, 2",
            "{a: 1}",
            "&x [*x]",
            "!!python/object:os.system x",
            "*x",
            "!!float abc",
            "!!int 0x",
            "2001-13-45",
            "!!timestamp 1",
            "{[1]: 2}",
            "!!binary abc",
            "? [a]\n: b",
            "~",
            ".nan",
            "-.inf",
            "0o7",
            "1e999",
        ]
    ),
)
overrides = st.lists(
    st.one_of(st.builds(lambda k, v: f"{k}={v}", dotted, yaml_text), words), max_size=4
)


@SETTINGS
@given(overrides)
@example(["data=!!timestamp 1"])  # YAML raised AttributeError
def test_overrides_give_a_mapping_or_a_value_error(items):
    data = result_or_value_error(apply_overrides, {}, items)
    if data is not None:
        assert isinstance(data, dict)
        config = result_or_value_error(parse_config, data)
        assert config is None or isinstance(config, RunConfig)


@SETTINGS
@given(st.one_of(yaml_text, st.text(max_size=60), st.binary(max_size=40)), overrides)
def test_load_config_on_any_file_gives_a_config_or_a_value_error(text, items):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "replace"))
        config = result_or_value_error(load_config, str(path), items)
    assert config is None or isinstance(config, RunConfig)


# ---------------------------------------------------------------------------- CSV files

odd_names = st.sampled_from(["", " a", "a.1", 'q"', "x,y", "l\nm", "Unnamed: 0"]) | words
bad_cells = st.one_of(
    st.sampled_from(["", "nan", "inf", "-inf", "1e300", "cat", " 1 ", '"1"', '"', "None"]),
    st.sampled_from(["TRUE", "0x1", "1,5", "a\nb", "3e9", "-0", "1_000", "?", "2", "-1"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    words,
)
odd_options = st.sampled_from(
    [
        ("size", 0),
        ("size", 2),
        ("size", "3"),
        ("sentinel", "?"),
        ("sentinel", -1),
        ("sentinel", [1]),
        ("classes", ["cat", "dog"]),
        ("classes", ["cat", None]),
        ("classes", [0, 0]),
        ("column", ["t", "u"]),
        ("column", []),
        ("column", "zz"),
        ("loss", "huber"),
        ("weight", 1),
        ("kind", "ordinal"),
        ("kind", "regression"),
        ("kind", "multilabel"),
    ]
)
# The cells of a column that fits each kind of task (an empty cell: not labelled).
FITTING = {
    "binary": ["0", "1", ""],
    "multiclass": ["0", "1", "2", ""],
    "multilabel": ["0", "1"],
    "regression": ["0.5", "-1", "7", "1e3", ""],
}


@st.composite
def csv_cases(draw):
    """(CSV text, inputs, tasks): a well-formed table (inputs a, b; tasks t, sometimes u, each
    column fitting its task's kind), then up to three random defects: an odd cell, an odd or
    repeated column name, a ragged row, an odd task option, an odd input name. Written by the
    csv module (quoting as needed) or joined by hand (no quoting)."""
    kinds = draw(st.lists(st.sampled_from(sorted(FITTING)), min_size=1, max_size=2))
    tasks = {name: {"kind": kind} for name, kind in zip(["t", "u"], kinds, strict=False)}
    header = ["a", "b", "t", "u"]
    pools = [["0", "1.5", "-2", "3e2"]] * 2 + [FITTING[k] for k in kinds]
    pools += [FITTING["binary"]] * (4 - len(pools))
    rows = [[draw(st.sampled_from(pool)) for pool in pools] for _ in range(draw(st.integers(0, 6)))]
    inputs = ["a", "b"]
    for defect in draw(st.lists(st.integers(0, 5), max_size=3)):
        if defect == 0 and rows:
            row = rows[draw(st.integers(0, len(rows) - 1))]
            row[draw(st.integers(0, len(row) - 1))] = draw(bad_cells)
        elif defect == 1:
            header[draw(st.integers(0, 3))] = draw(odd_names | st.sampled_from(header))
        elif defect == 2 and rows:
            row = draw(st.integers(0, len(rows) - 1))
            rows[row] = rows[row][:-1] if draw(st.booleans()) else [*rows[row], "1"]
        elif defect == 3:
            key, value = draw(odd_options)
            tasks[draw(st.sampled_from(sorted(tasks)))][key] = value
        elif defect == 4:
            inputs = draw(st.lists(odd_names | st.sampled_from(header), min_size=0, max_size=2))
        elif defect == 5:
            tasks[draw(odd_names)] = {"kind": "binary"}
    if draw(st.booleans()):
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator=draw(st.sampled_from(["\n", "\r\n"]))).writerows(
            [header, *rows]
        )
        text = buffer.getvalue()
    else:
        text = "\n".join(",".join(row) for row in [header, *rows])
    return text, inputs, tasks


@SETTINGS
@given(csv_cases(), st.text(max_size=80), st.integers(0, 4), st.booleans())
@example(('"l\nm"\n', ["a"], {"t": {"kind": "binary"}}), "", 2, False)  # two-line message
@example(("a,t\n1,inf\n", ["a"], {"t": {"kind": "multiclass"}}), "", 2, False)  # a warning
def test_the_csv_reader_gives_splits_or_a_value_error(tmp_path, case, noise, split, standardize):
    text, inputs, tasks = case
    if split == 0:  # now and then the file is any text at all
        text = noise
    path = tmp_path / "d.csv"
    path.write_text(text, encoding="utf-8", errors="replace", newline="")
    files = {"val_path": path, "test_path": path} if split > 1 else {"seed": split}
    splits = result_or_value_error(
        build_files,
        path,
        inputs,
        tasks,
        standardize=standardize,
        standardize_targets=standardize,
        **files,
    )
    if splits is not None:
        assert set(splits.tasks) == set(tasks)
        assert splits.train.inputs.shape[1] == len(inputs)
        assert bool(splits.train.inputs.isfinite().all())


# ---------------------------------------------------------------------------- NPZ files

odd_dtypes = st.sampled_from([np.float16, np.int64, np.uint8, np.bool_, np.complex64, "U3"])
odd_values = st.sampled_from([np.nan, np.inf, -np.inf, 1e300, -1.0, 0.5, 2.0, 7.0, 3e9])


def label_array(kind, n):
    """Labels of ``n`` samples that fit ``kind`` (NaN: not labelled)."""
    rng = np.random.default_rng(n)
    if kind == "multilabel":
        return rng.integers(0, 2, (n, 2))
    if kind == "regression":
        return rng.normal(size=n).round(2)
    return rng.integers(0, 2 if kind == "binary" else 3, n).astype(np.float64)


@st.composite
def npz_cases(draw):
    """(arrays, layout, lengths, tasks): well-formed inputs x (N, ...) of the layout, labels t
    fitting the task's kind and lengths len, then up to three random defects: another dtype, a
    non-finite or odd value, a missing or extra axis, an empty axis, another row count, lengths
    out of range, an odd task option."""
    n = draw(st.integers(1, 5))
    layout = draw(st.sampled_from(["table", "sequence", "image"]))
    shape = (
        n,
        *draw(
            st.lists(
                st.integers(1, 3),
                min_size=LAYOUT_NDIM[layout] - 1,
                max_size=LAYOUT_NDIM[layout] - 1,
            )
        ),
    )
    arrays = {"x": np.arange(np.prod(shape), dtype=np.float64).reshape(shape) / 7}
    kind = draw(st.sampled_from(sorted(FITTING)))
    tasks = {"t": {"kind": kind}}
    arrays["t"] = label_array(kind, n)
    steps = shape[1] if len(shape) > 1 else 1
    arrays["len"] = np.array([draw(st.integers(1, steps)) for _ in range(n)])
    lengths = "len" if layout == "sequence" and draw(st.booleans()) else None
    for defect in draw(st.lists(st.integers(0, 6), max_size=3)):
        name = draw(st.sampled_from(["x", "t", "len"]))
        array = arrays[name]
        if defect == 0:
            with warnings.catch_warnings():  # NaN to an integer, complex to real: any value
                warnings.simplefilter("ignore")
                arrays[name] = array.astype(draw(odd_dtypes))
        elif defect == 1 and array.size:
            array = array.astype(np.float64)
            array.flat[draw(st.integers(0, array.size - 1))] = draw(odd_values)
            arrays[name] = array
        elif defect == 2:
            arrays[name] = array[..., None] if draw(st.booleans()) else array.reshape(-1)
        elif defect == 3:
            arrays[name] = array[: draw(st.integers(0, len(array)))] if array.ndim else array
        elif defect == 4:
            key, value = draw(odd_options)
            tasks["t"][key] = value
        elif defect == 5:
            lengths = draw(st.sampled_from(["len", "x", "t", "zz"]))
        elif defect == 6:
            arrays[name] = np.asarray(array.reshape(-1)[0] if array.size else 0)  # no axis
    return arrays, layout, lengths, tasks


@SETTINGS
@given(npz_cases(), st.booleans())
@example(  # lengths with image inputs: a RuntimeError in standardize
    (
        {"x": np.zeros((3, 2, 1, 1)), "t": np.array([1.0, 0, 0]), "len": np.ones(3, int)},
        "image",
        "len",
        {"t": {"kind": "binary"}},
    ),
    True,
)
def test_the_npz_reader_gives_splits_or_a_value_error(tmp_path, case, standardize):
    contents, layout, lengths, tasks = case
    path = tmp_path / "d.npz"
    np.savez(path, **contents)
    splits = result_or_value_error(
        build_files,
        path,
        "x",
        tasks,
        layout=layout,
        lengths=lengths,
        val_path=path,
        test_path=path,
        standardize=standardize,
        standardize_targets=standardize,
    )
    if splits is not None:
        assert len(splits.train) == len(contents["x"])
        assert set(splits.tasks) == set(tasks)
        assert bool(splits.train.inputs.isfinite().all())


def test_the_strategies_reach_both_outcomes(tmp_path):
    """The properties above are not vacuous: their strategies draw inputs that build and
    inputs that fail, and a two-line message would fail them."""
    assert isinstance(result_or_value_error(parse_config, {"train": {"epochs": 2}}), RunConfig)
    assert result_or_value_error(parse_config, {"train": {"epochs": "x"}}) is None
    with pytest.raises(AssertionError):
        result_or_value_error(lambda: (_ for _ in ()).throw(ValueError("two\nlines")))
    path = tmp_path / "d.csv"

    def csv_builds(case):
        path.write_text(case[0], encoding="utf-8", errors="replace", newline="")
        return result_or_value_error(build_files, path, *case[1:], val_path=path, test_path=path)

    def npz_builds(case):
        np.savez(tmp_path / "d.npz", **case[0])
        return result_or_value_error(
            build_files,
            tmp_path / "d.npz",
            "x",
            case[3],
            layout=case[1],
            lengths=case[2],
            val_path=tmp_path / "d.npz",
            test_path=tmp_path / "d.npz",
        )

    quick = settings(max_examples=200, derandomize=True, database=None, phases=[Phase.generate])
    for strategy, builds in ((csv_cases(), csv_builds), (npz_cases(), npz_builds)):
        find(strategy, lambda case, builds=builds: builds(case) is not None, settings=quick)
        find(strategy, lambda case, builds=builds: builds(case) is None, settings=quick)
    for outcome in (True, False):
        find(
            configs | edited_configs(),
            lambda d, outcome=outcome: (result_or_value_error(parse_config, d) is None) != outcome,
            settings=quick,
        )
