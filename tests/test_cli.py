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
    assert code == 0 and {"attention_mtl", "seed_attn_rnn", "seed_attn_transfer_mtl"} <= set(
        out.split()
    )
    code, out, _ = run(["list", "weightings"], capsys)
    assert code == 0 and {"equal", "uncertainty", "dwa", "rlw", "famo"} <= set(out.split())
    code, out, _ = run(["list", "datasets"], capsys)
    assert code == 0 and {"mnist1d-mt", "files"} <= set(out.split())
    code, out, _ = run(["list", "configs"], capsys)
    assert code == 0 and "default" in out.split()
    code, out, _ = run(["list", "encoders"], capsys)
    assert code == 0 and out.split() == ["cnn", "hf", "mlp", "rnn", "transformer"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["list", "nothing"], "'nothing' is not one of 'configs', 'datasets', 'encoders'"),
        (["train", "train.epochs=0"], "train.epochs: Input should be greater than or equal to 1"),
        (["train", "model.name=nope"], "model.name: unknown model 'nope'"),
        (["train", "-c", "missing.yaml"], "config 'missing.yaml' is neither a file"),
        (["train", "epochs"], "override 'epochs'; expected dotted.key=value"),
        (["train", "--resume", "."], "not a run directory"),
        (["eval", "."], "not a run directory"),
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


TINY = [
    "data.num_train=128",
    "data.num_val=64",
    "data.num_test=64",
    "train.epochs=2",
    "model.encoder_options={cell: gru, hidden_dim: 8}",
    "train.progress=false",
    "train.tensorboard=false",
]


def test_train_then_eval_from_the_command_line(tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, out, _ = run(["train", *TINY, "--out", str(out_dir)], capsys)
    assert code == 0 and "digit" in out and "accuracy" in out
    summary = json.loads((out_dir / "summary.json").read_text())
    assert set(summary["tasks"]) == {"digit", "position", "scale"}
    assert {"accuracy", "f1", "loss"} <= set(summary["tasks"]["digit"])
    assert "mae" in summary["tasks"]["scale"]
    result = tmp_path / "eval.json"
    code, out, _ = run(["eval", str(out_dir), "--json", str(result)], capsys)
    assert code == 0
    assert json.loads(result.read_text())["tasks"] == summary["tasks"]
    # a shifted version of the data: same tasks, more noise, other scores
    code, out, _ = run(
        ["eval", str(out_dir), "data.iid_noise_scale=0.5", "--json", str(result)], capsys
    )
    assert code == 0
    assert json.loads(result.read_text())["tasks"]["digit"] != summary["tasks"]["digit"]
    code, _, err = run(["train", *TINY, "--out", str(out_dir)], capsys)
    assert code == 2 and "already exists" in err


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("model.encoder_options.hiden_dim=64", "unknown argument 'hiden_dim' for encoder 'rnn'"),
        ("model.attention_options.heads=2", "unknown argument 'heads' for attention_options"),
        ("model.encoder=lstm", "encoder='lstm'; expected one of: cnn, hf, mlp, rnn, transformer"),
        ("data.tasks=[digit, colour]", "colour"),
    ],
)
def test_bad_nested_options_fail_before_a_run_directory_exists(override, needle, tmp_path, capsys):
    code, _, err = run(["train", override, "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and needle in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_tables_are_not_cut_when_stdout_is_not_a_terminal():
    """Piped output once cut the results table at 80 columns (``body_m…``)."""
    code = (
        "from attnmtl.cli import console\n"
        "from attnmtl.pipeline import results_table\n"
        "console.print(results_table({'body_mass': {f'metric_{i}': 1.0 for i in range(14)}}, 't'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "body_mass" in out.stdout and "metric_13" in out.stdout
    assert max(len(line) for line in out.stdout.splitlines()) > 80


@pytest.mark.parametrize(
    ("what", "loaded"),
    [("configs", []), ("models", []), ("weightings", []), ("models', '-v", ["torch"])],
)
def test_list_imports_only_the_layer_it_lists(what, loaded):
    """``attnmtl list`` loads no torch (names are read from the source, attnmtl.catalog);
    ``list models -v`` loads the model layer for its signatures but no data layer (pandas,
    scikit-learn), which once made every ``list`` take 5-6 s."""
    code = (
        "import sys\n"
        "from attnmtl.cli import main\n"
        "try:\n"
        f"    main(['list', '{what}'])\n"
        "finally:\n"
        "    heavy = ('torch', 'pandas', 'sklearn', 'matplotlib')\n"
        "    print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stderr.strip().splitlines()[-1] == str(loaded), out.stderr
