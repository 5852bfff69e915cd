"""The command line: real commands work; bad input is one line and exit code 2."""

import json
import subprocess
import sys

import pytest

from attnmtl import __version__
from attnmtl.cli import main


def run(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_version_and_list(capsys):
    assert run(["--version"], capsys)[:2] == (0, f"attnmtl {__version__}\n")
    code, out, _ = run(["list", "models"], capsys)
    assert code == 0 and out.split() == ["seed_attn_rnn", "seed_attn_transfer_mtl"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["list", "nothing"], "'nothing' is not one of 'models'"),
        (["frobnicate"], "No such command 'frobnicate'"),
        (["bench", "attention", "--seq-lens", "128,x"], "--seq-lens='128,x'"),
        (["bench", "attention", "--batch", "0"], "--batch"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_2(argv, needle, capsys):
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    assert err.startswith("attnmtl: error:") and needle in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_bench_attention_writes_its_table_and_json(tmp_path, capsys):
    out_json = tmp_path / "bench.json"
    argv = ["bench", "attention", "--seq-lens", "8,16", "--batch", "2", "--heads", "2"]
    argv += ["--head-dim", "4", "--repeats", "1", "--warmup", "0", "--json", str(out_json)]
    code, out, _ = run(argv, capsys)
    assert code == 0 and "raw SDPA" in out
    results = json.loads(out_json.read_text())["results"]
    assert set(results) == {"8", "16"}
    assert results["8"]["raw_sdpa"]["ratio_to_sdpa"] == 1.0


def test_console_script_module_entry_point():
    done = subprocess.run(
        [sys.executable, "-m", "attnmtl", "list", "bogus"], capture_output=True, text=True
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1
