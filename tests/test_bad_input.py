"""Bad input through the real command line, one table: config, data files and CLI misuse.

Every case runs ``attnmtl.cli.main`` in a fresh working directory and must end with exit code
2, one line on stderr (``attnmtl: error: ...``) naming the bad key, value or file, no
traceback, and nothing written: the directory's files (an existing run included) are the same
bytes, with the same modification times, after the command as before it.
"""

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from attnmtl.cli import main

# A files data set: 12 rows, a binary task, a 4-unit MLP; trains in about a second.
ROWS = "".join(f"{i},{i % 2}\n" for i in range(12))
TRAIN = "train: {epochs: 1, progress: false, tensorboard: false, report: false}"
MODEL = "model: {name: attention_mtl, encoder: mlp, encoder_options: {hidden_dims: [4]}}"


def config(data: str, name: str = "c.yaml") -> list[str]:
    """Write a config whose data section holds ``data`` (YAML flow items); its -c arguments."""
    Path(name).write_text(
        f"name: bad\ndata: {{name: files, {data}}}\n{MODEL}\n{TRAIN}\n", encoding="utf-8"
    )
    return ["train", "-c", name]


def csv(
    text: str, tasks: str = "{t: {kind: binary}}", inputs: str = "[a]", extra: str = ""
) -> list[str]:
    """A CSV file d.csv and a config reading it with a seeded random split."""
    Path("d.csv").write_text(text, encoding="utf-8")
    return config(f"path: d.csv, inputs: {inputs}, tasks: {tasks}{extra}")


def npz(tasks: str = "{t: {kind: binary}}", extra: str = "", **arrays: np.ndarray) -> list[str]:
    """An NPZ archive d.npz and a config reading its ``x`` array as a table."""
    np.savez("d.npz", **arrays)
    return config(f"path: d.npz, inputs: x, tasks: {tasks}{extra}")


def write(name: str, content: str | bytes) -> None:
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")


X12 = np.arange(24, dtype=np.float64).reshape(12, 2)
T12 = np.arange(12) % 2


def with_nan(x: np.ndarray, value: float) -> np.ndarray:
    x = x.copy()
    x[3, 1] = value
    return x


# (id, set-up returning argv, pattern the one-line error must contain). A set-up may use the
# run directory "run" (a finished one-epoch run) that every case finds in its directory.
CASES: list[tuple[str, Callable[[], list[str]], str]] = [
    # ------------------------------------------------------------------------------ config
    ("unknown-top-key", lambda: ["train", "trian.epochs=3"], r"unknown key 'trian'; .*train"),
    ("unknown-key", lambda: ["train", "train.epoch=3"], r"unknown key 'train\.epoch'; .*epochs"),
    ("unknown-option", lambda: ["train", "model.hidden=3"], r"unknown key 'model\.hidden'"),
    (
        "unknown-nested-option",
        lambda: ["train", "model.encoder_options.hiden_dim=8"],
        r"unknown argument 'hiden_dim' for encoder 'rnn'",
    ),
    ("wrong-type", lambda: ["train", "train.batch_size=big"], r"train\.batch_size: .*'big'"),
    ("wrong-type-bool", lambda: ["train", "train.amp=maybe"], r"train\.amp: .*'maybe'"),
    ("wrong-type-option", lambda: ["train", "data.num_train=abc"], r"data\.num_train: .*'abc'"),
    ("section-not-mapping", lambda: ["train", "data=3"], r"data: .*dictionary.* \(got 3\)"),
    (
        "unknown-model",
        lambda: ["train", "model.name=resnet"],
        r"model\.name: unknown model 'resnet'",
    ),
    (
        "unknown-weighting",
        lambda: ["train", "weighting.name=magic"],
        r"weighting\.name: unknown weighting 'magic'",
    ),
    ("unknown-dataset", lambda: ["train", "data.name=nope"], r"data\.name: unknown dataset 'nope'"),
    (
        "unknown-choice",
        lambda: ["train", "optimizer.name=rmsprop"],
        r"optimizer\.name: .*'rmsprop'",
    ),
    (
        "negative-batch",
        lambda: ["train", "train.batch_size=-4"],
        r"train\.batch_size: .*\(got -4\)",
    ),
    (
        "negative-model-size",
        lambda: ["train", "model.encoder_options.hidden_dim=-8"],
        r"hidden_dim=-8, .*expected sizes >= 1",
    ),
    ("negative-data-size", lambda: ["train", "data.num_train=-5"], r"num_train.*\[-5, "),
    (
        "infinite-lr",
        lambda: ["train", "optimizer.lr=.inf"],
        r"optimizer\.lr: .*finite.*\(got inf\)",
    ),
    ("bad-device", lambda: ["train", "train.device=tpu"], r"train\.device='tpu'"),
    ("bad-monitor", lambda: ["train", "train.monitor=digit"], r"train\.monitor='digit'"),
    (
        "missing-config",
        lambda: ["train", "-c", "missing.yaml"],
        r"config 'missing\.yaml' is neither",
    ),
    (
        "invalid-yaml",
        lambda: (write("c.yaml", "train: [1, 2\n"), ["train", "-c", "c.yaml"])[1],
        r"c\.yaml: invalid YAML",
    ),
    (
        "yaml-python-tag",  # the safe loader refuses it: nothing runs, no file appears
        lambda: (
            write("c.yaml", "name: !!python/object/apply:os.system ['touch pwned']\n"),
            ["train", "-c", "c.yaml"],
        )[1],
        r"c\.yaml: invalid YAML .*python/object/apply",
    ),
    (
        "config-not-utf8",
        lambda: (write("c.yaml", b"name: \xff\xfe\n"), ["train", "-c", "c.yaml"])[1],
        r"c\.yaml: not UTF-8 text",
    ),
    (
        "config-not-mapping",
        lambda: (write("c.yaml", "- 1\n"), ["train", "-c", "c.yaml"])[1],
        r"c\.yaml: expected a mapping at the top level, got list",
    ),
    (
        "name-traversal",
        lambda: ["train", "name=../escape"],
        r"name: .*pattern.*\(got '\.\./escape'\)",
    ),
    ("name-absolute", lambda: ["train", "name=/tmp/abs"], r"name: .*\(got '/tmp/abs'\)"),
    ("name-separator", lambda: ["train", "name=a/b"], r"name: .*\(got 'a/b'\)"),
    (
        "import-refused",
        lambda: ["train", "model.name=os:system"],
        r"model\.name: model 'os:system' is imported from outside attnmtl.*ATTNMTL_ALLOW_IMPORTS",
    ),
    (
        "import-path-malformed",
        lambda: ["train", "weighting.name=a b:c"],
        r"weighting 'a b:c': expected a registered name or package\.module:Factory",
    ),
    # -------------------------------------------------------------------------------- data
    (
        "missing-data-file",
        lambda: config("path: nowhere.csv, inputs: [a], tasks: {t: {kind: binary}}"),
        r"data file not found: 'nowhere\.csv'",
    ),
    (
        "nan-feature",
        lambda: csv("a,t\n" + ROWS.replace("3,1", "nan,1")),
        r"column 'a', line 5: 'nan'",
    ),
    (
        "inf-feature",
        lambda: csv("a,t\n" + ROWS.replace("3,1", "-inf,1")),
        r"line 5: '-inf' is not a",
    ),
    (
        "overflowing-feature",
        lambda: csv("a,t\n" + ROWS.replace("3,1", "1e300,1")),
        r"line 5: '1e300' is not a finite number \(beyond the float32 range\)",
    ),
    (
        "nan-feature-npz",
        lambda: npz(x=with_nan(X12, np.nan), t=T12),
        r"d\.npz: .*'x' holds nan at \(3, 1\)",
    ),
    ("inf-feature-npz", lambda: npz(x=with_nan(X12, np.inf), t=T12), r"'x' holds inf at \(3, 1\)"),
    (
        "binary-label-2",
        lambda: csv("a,t\n" + ROWS.replace("3,1", "3,2")),
        r"column 't', line 5: label 2 is not 0 or 1",
    ),
    (
        "class-out-of-range",
        lambda: csv("a,t\n" + ROWS.replace("3,1", "3,5"), "{t: {kind: multiclass, size: 3}}"),
        r"line 5: label 5 is not a class id in \[0, 2\]",
    ),
    (
        "negative-class",
        lambda: csv("a,t\n" + ROWS.replace("3,1", "3,-1"), "{t: {kind: multiclass}}"),
        r"line 5: label -1 is not a class id \(an integer >= 0\)",
    ),
    (
        "huge-class",
        lambda: csv("a,t\n" + ROWS.replace("3,1", "3,3e9"), "{t: {kind: multiclass}}"),
        r"line 5: label 3e\+09 is not a class id below 100000 \(declare size for more",
    ),
    (
        "infinite-target",
        lambda: csv("a,t\n" + ROWS.replace("3,1", "3,inf"), "{t: {kind: regression}}"),
        r"line 5: label inf is not a finite number",
    ),
    (
        "wrong-shape-inputs",
        lambda: npz(x=np.zeros((12, 2, 3)), t=T12),
        r"'x' has shape \(12, 2, 3\); layout 'table' expects 2 axes",
    ),
    (
        "wrong-shape-labels",
        lambda: npz(x=X12, t=np.zeros((12, 2))),
        r"task 't' labels have shape \(12, 2\); expected \(N,\)",
    ),
    (
        "no-features",
        lambda: npz(x=np.zeros((12, 0)), t=T12),
        r"'x' has shape \(12, 0\); expected values",
    ),
    (
        "mismatched-lengths-npz",
        lambda: npz(x=X12, t=T12[:9]),
        r"array 't' has shape \(9,\); expected 12 rows",
    ),
    (
        "mismatched-lengths-csv",
        lambda: csv("a,t\n" + ROWS + "5,1,7\n"),
        r"d\.csv: cannot parse as CSV \(.*saw 3",
    ),
    (
        "mismatched-features-val",
        lambda: (
            np.savez("v.npz", x=np.zeros((4, 3)), t=T12[:4]),
            npz(extra=", val_path: v.npz", x=X12, t=T12),
        )[1],
        r"v\.npz: inputs have shape \(3,\) per sample; d\.npz has \(2,\)",
    ),
    ("empty-table", lambda: csv("a,t\n"), r"d\.csv: empty table \(no data rows\)"),
    ("empty-file", lambda: csv(""), r"d\.csv: empty table \(no header row\)"),
    (
        "empty-npz",
        lambda: npz(x=np.zeros((0, 2)), t=np.zeros(0)),
        r"'x' has no samples \(shape \(0, 2\)\)",
    ),
    (
        "task-without-labels",
        lambda: csv("a,t\n" + "".join(f"{i},\n" for i in range(12))),
        r"task 't' has no labelled sample in d\.csv",
    ),
    (
        "non-numeric-feature",
        lambda: csv("a,t\n" + ROWS.replace("3,1", "three,1")),
        r"line 5: 'three' is not a finite number",
    ),
    (
        "non-numeric-label",
        lambda: csv("a,t\n" + ROWS.replace("3,1", "3,yes")),
        r"line 5: label 'yes' is not a number",
    ),
    (
        "text-inputs-npz",
        lambda: npz(x=np.array([["a", "b"]] * 12), t=T12),
        r"'x' has dtype <U1; expected numbers",
    ),
    (
        "object-array-npz",
        lambda: npz(x=X12, t=np.array([{"a": 1}] * 12, dtype=object)),
        r"array 't' holds Python objects",
    ),
    (
        "duplicate-columns",
        lambda: csv("a,a,t\n" + ROWS.replace(",", ",0,")),
        r"duplicate column name 'a'",
    ),
    (
        "missing-column",
        lambda: csv("a,u\n" + ROWS),
        r"no column 't' \(needed by task 't'\); available: a, u",
    ),
    ("no-tasks", lambda: csv("a,t\n" + ROWS, tasks="{}"), r"tasks is empty"),
    (
        "unknown-task-option",
        lambda: csv("a,t\n" + ROWS, "{t: {kind: binary, weight: 2}}"),
        r"task 't': unknown option 'weight'",
    ),
    (
        "unknown-task-kind",
        lambda: csv("a,t\n" + ROWS, "{t: {kind: ordinal}}"),
        r"task 't': kind='ordinal'",
    ),
    (
        "list-sentinel",
        lambda: csv("a,t\n" + ROWS, "{t: {kind: binary, sentinel: [1]}}"),
        r"task 't': sentinel=\[1\]; expected one number or text",
    ),
    (
        "negative-task-size",
        lambda: csv("a,t\n" + ROWS, "{t: {kind: multiclass, size: -2}}"),
        r"task 't': size=-2",
    ),
    (
        "bad-fraction",
        lambda: csv("a,t\n" + ROWS, extra=", val_fraction: 1.5"),
        r"val_fraction=1\.5; expected a share in \(0, 1\)",
    ),
    (
        "negative-seed",
        lambda: csv("a,t\n" + ROWS, extra=", seed: -1"),
        r"seed=-1; expected an integer >= 0",
    ),
    # --------------------------------------------------------------------------------- CLI
    (
        "override-without-value",
        lambda: ["train", "epochs"],
        r"override 'epochs'; expected dotted\.key=value",
    ),
    ("override-empty-part", lambda: ["train", "train..epochs=1"], r"override 'train\.\.epochs=1'"),
    ("override-into-value", lambda: ["train", "train.epochs.x=1"], r"'epochs' is not a section"),
    ("unknown-option-flag", lambda: ["train", "--bogus"], r"No such option: --bogus"),
    (
        "resume-missing",
        lambda: ["train", "--resume", "nowhere"],
        r"--resume nowhere: not a run directory",
    ),
    (
        "resume-not-a-run",
        lambda: (write("notrun/notes.txt", "mine"), ["train", "--resume", "notrun"])[1],
        r"--resume notrun: not a run directory \(no config\.yaml\)",
    ),
    ("resume-a-file", lambda: ["train", "--resume", "run/config.yaml"], r"not a run directory"),
    (
        "resume-with-out",
        lambda: ["train", "--resume", "run", "--out", "o"],
        r"--resume takes the run's own config",
    ),
    (
        "resume-finished",
        lambda: ["train", "--resume", "run"],
        r"the run has finished \(1 of 1 epochs\)",
    ),
    (
        "resume-changed-config",
        lambda: ["train", "--resume", "run", "model.name=mtan"],
        r"override 'model\.name' cannot change on --resume",
    ),
    (
        "resume-bad-value",
        lambda: ["train", "--resume", "run", "train.epochs=zero"],
        r"train\.epochs: .*'zero'",
    ),
    (
        "resume-tampered-checkpoint",
        lambda: (
            tamper("run/checkpoints/last/model.safetensors"),
            ["train", "--resume", "run", "train.epochs=2"],
        )[1],
        r"no intact checkpoint at run/checkpoints/last",
    ),
    (
        "out-exists",
        lambda: ["train", "--out", "run"],
        r"--out run already exists; runs are never overwritten",
    ),
    (
        "eval-not-a-run",
        lambda: (write("notrun/x", ""), ["eval", "notrun"])[1],
        r"notrun: not a run directory",
    ),
    (
        "eval-bad-split",
        lambda: ["eval", "run", "--split", "dev"],
        r"--split 'dev'; expected one of: train, val, test",
    ),
    (
        "eval-bad-override",
        lambda: ["eval", "run", "model.name=mtan"],
        r"eval takes data\.KEY=VALUE overrides only",
    ),
]


def tamper(path: str) -> None:
    """Flip one byte of ``path`` (its checksum in state.json no longer matches)."""
    data = bytearray(Path(path).read_bytes())
    data[-1] ^= 0xFF
    Path(path).write_bytes(bytes(data))


def snapshot(root: Path) -> dict[str, tuple[int, bytes] | None]:
    """Every path under ``root``: files as (modification time, bytes), folders as None."""
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) if p.is_file() else None
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished one-epoch run on a 12-row CSV, made once and copied into each case."""
    root = tmp_path_factory.mktemp("finished")
    data = f"path: {root / 'd.csv'}, inputs: [a], tasks: {{t: {{kind: binary}}}}"
    (root / "d.csv").write_text("a,t\n" + ROWS)
    (root / "c.yaml").write_text(f"name: ok\ndata: {{name: files, {data}}}\n{MODEL}\n{TRAIN}\n")
    with pytest.raises(SystemExit) as done:
        main(["train", "-c", str(root / "c.yaml"), "--out", str(root / "run")])
    assert done.value.code == 0
    assert (root / "run" / "checkpoints" / "last" / "state.json").is_file()
    return root / "run"


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


@pytest.mark.parametrize(("setup", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    setup, pattern, finished_run, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ATTNMTL_ALLOW_IMPORTS", raising=False)
    shutil.copytree(finished_run, tmp_path / "run")
    argv = setup()
    before = snapshot(tmp_path)
    code, out, err = run_cli(argv, capsys)
    assert (code, out) == (2, ""), err
    assert err.startswith("attnmtl: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert re.search(pattern, err), err
    assert snapshot(tmp_path) == before  # no run directory, no file touched


def test_the_table_covers_at_least_30_distinct_cases():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)) >= 30


def test_bad_input_in_a_fresh_process_prints_one_line_only(tmp_path):
    """A fresh interpreter shows what in-process capture hides: here NumPy's overflow warning
    on casting 1e300 to float32 would be a second line on stderr."""
    (tmp_path / "d.csv").write_text("a,t\n" + ROWS.replace("3,1", "1e300,1"))
    data = "path: d.csv, inputs: [a], tasks: {t: {kind: binary}}"
    (tmp_path / "c.yaml").write_text(
        f"name: bad\ndata: {{name: files, {data}}}\n{MODEL}\n{TRAIN}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "attnmtl", "train", "-c", "c.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("attnmtl: error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "'1e300' is not a finite number (beyond the float32 range)" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "d.csv"]
