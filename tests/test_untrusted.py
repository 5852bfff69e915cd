"""Untrusted files: nothing is unpickled, configs import no code unless the user allows it,
YAML is loaded safely, and run names cannot escape the runs/ folder."""

import ast
import json
import os
import pickle
import sys
import uuid
from pathlib import Path

import pytest
import torch

from attnmtl.cli import main
from attnmtl.core.registry import ALLOW_IMPORTS_ENV, allow_imports, imports_allowed
from attnmtl.pipeline import new_run_dir
from attnmtl.run.checkpoint import load_checkpoint, save_checkpoint, sha256
from attnmtl.run.config import apply_overrides, load_config, parse_config, read_yaml

SRC = Path(__file__).parents[1] / "src" / "attnmtl"

# ----------------------------------------------------------------- a scan of the source

UNPICKLING_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "shelve", "marshal"}
UNSAFE_YAML = {"load", "load_all", "full_load", "full_load_all", "unsafe_load", "unsafe_load_all"}
UNSAFE_YAML_LOADERS = {"Loader", "FullLoader", "UnsafeLoader"}
UNSAFE_CALLS = {f"yaml.{f}" for f in UNSAFE_YAML} | {
    "pd.read_pickle",
    "pandas.read_pickle",
    "torch.jit.load",
    "eval",
    "exec",
}


def _name(node: ast.AST) -> str:
    """Dotted name of an attribute chain (``torch.jit.load``), '' for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _name(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _keyword(call: ast.Call, name: str) -> object:
    for keyword in call.keywords:
        if keyword.arg == name and isinstance(keyword.value, ast.Constant):
            return keyword.value.value
    return None


def unsafe_loads(source: str) -> list[str]:
    """Every place in ``source`` that could unpickle or run code while reading a file."""
    found = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            modules += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [
                f"{line}: import {m}" for m in modules if m.split(".")[0] in UNPICKLING_MODULES
            ]
        elif isinstance(node, ast.Attribute) and _name(node) in {
            f"yaml.{loader}" for loader in UNSAFE_YAML_LOADERS
        }:
            found.append(f"{line}: {_name(node)}")
        elif isinstance(node, ast.Call):
            name = _name(node.func)
            if name == "torch.load" and _keyword(node, "weights_only") is not True:
                found.append(f"{line}: torch.load without weights_only=True")
            elif name in ("np.load", "numpy.load") and _keyword(node, "allow_pickle") is not False:
                found.append(f"{line}: {name} without allow_pickle=False")
            elif name in UNSAFE_CALLS:
                found.append(f"{line}: {name}")
            elif (
                name.endswith(".from_pretrained")
                and "Tokenizer" not in name
                and _keyword(node, "use_safetensors") is not True
            ):
                found.append(f"{line}: {name} without use_safetensors=True")
    return found


def test_the_scan_finds_every_kind_of_unsafe_load():
    bad = """
import pickle
from joblib import load
torch.load(f)
torch.load(f, weights_only=False)
np.load(f)
yaml.load(text, Loader=yaml.Loader)
yaml.unsafe_load(text)
pd.read_pickle(f)
transformers.AutoModel.from_pretrained(folder)
"""
    good = """
torch.load(f, weights_only=True)
np.load(f, allow_pickle=False)
yaml.safe_load(text)
AutoTokenizer.from_pretrained(folder)
transformers.AutoModel.from_pretrained(folder, use_safetensors=True)
"""
    assert len(unsafe_loads(bad)) == 10
    assert unsafe_loads(good) == []


def test_the_source_never_unpickles_or_loads_yaml_unsafely():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 50
    found = [f"{p.relative_to(SRC)}:{hit}" for p in files for hit in unsafe_loads(p.read_text())]
    assert found == []


# ------------------------------------------------------------------------- checkpoints


def test_a_checkpoint_is_safetensors_and_json_and_a_pickle_in_it_never_runs(tmp_path):
    folder = save_checkpoint(
        tmp_path / "ck", {"w": torch.ones(2)}, {}, {"t": torch.zeros(1), "n": 3}, {"epoch": 1}
    )
    assert sorted(p.name for p in folder.iterdir()) == [
        "model.safetensors",
        "optimizer.safetensors",
        "state.json",
    ]
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    # A pickle in place of the weights, with a checksum that matches it: refused unread.
    (folder / "model.safetensors").write_bytes(pickle.dumps(Payload()))
    state = json.loads((folder / "state.json").read_text())
    state["sha256"]["model.safetensors"] = sha256(folder / "model.safetensors")
    (folder / "state.json").write_text(json.dumps(state))
    with pytest.raises(ValueError, match="no intact checkpoint"):
        load_checkpoint(folder)
    assert not marker.exists()
    pickle.loads(pickle.dumps(Payload()))  # the payload does run when unpickled
    assert marker.exists()


# --------------------------------------------------------------------- YAML, safe only


def test_yaml_tags_that_would_run_code_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text("name: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ValueError, match=r"c\.yaml: invalid YAML"):
        read_yaml(path)
    # as an override value it stays text and is then refused as a name
    data = apply_overrides({}, ["name=!!python/object/apply:os.system ['touch pwned']"])
    assert data["name"].startswith("!!python")
    with pytest.raises(ValueError, match="name: String should match pattern"):
        parse_config(data)
    assert not (tmp_path / "pwned").exists()


# --------------------------------------------------------- component import paths

PROBE = """
from pathlib import Path
from attnmtl.weighting.dwa import DynamicWeightAverage
Path({marker!r}).write_text("imported")
LIMIT = 3


def make_dwa(tasks: list[str], temperature: float = 2.0):
    return DynamicWeightAverage(tasks, temperature=temperature)
"""


@pytest.fixture
def probe_module(tmp_path, monkeypatch):
    """A module that records being imported; its name is new to this process."""
    name = f"probe_{uuid.uuid4().hex}"
    marker = tmp_path / "imported"
    (tmp_path / f"{name}.py").write_text(PROBE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(ALLOW_IMPORTS_ENV, raising=False)
    yield name, marker
    sys.modules.pop(name, None)


def test_an_import_path_outside_attnmtl_is_refused_before_importing(probe_module):
    name, marker = probe_module
    for section in ("model", "weighting", "data"):
        with pytest.raises(
            ValueError,
            match=rf"{section}\.name: \w+ '{name}:make_dwa' is imported from outside attnmtl, "
            r"which runs its code; "
            rf"refused unless allowed \({ALLOW_IMPORTS_ENV}=1 or attnmtl train --allow-imports\)",
        ):
            load_config(None, [f"{section}.name={name}:make_dwa"])
    with pytest.raises(ValueError, match="refused"):
        load_config(None, ["model.name=attnmtl_lookalike.models:Net"])  # not inside attnmtl
    assert not marker.exists() and name not in sys.modules
    with allow_imports(False), pytest.raises(ValueError, match="refused"):
        load_config(None, [f"weighting.name={name}:make_dwa"])


def test_an_allowed_import_path_is_used_with_the_same_argument_checks(probe_module, monkeypatch):
    name, marker = probe_module
    monkeypatch.setenv(ALLOW_IMPORTS_ENV, "1")
    config = load_config(None, [f"weighting.name={name}:make_dwa", "weighting.temperature=3"])
    assert marker.exists()
    from attnmtl.run.build import build_weighting

    weighting = build_weighting(config, ["a", "b"])
    assert type(weighting).__name__ == "DynamicWeightAverage" and weighting.temperature == 3.0
    with pytest.raises(ValueError, match=r"unknown key 'weighting\.temp'; expected one of: temp"):
        load_config(None, [f"weighting.name={name}:make_dwa", "weighting.temp=3"])
    with pytest.raises(ValueError, match=r"weighting\.temperature: .*'hot'"):
        load_config(None, [f"weighting.name={name}:make_dwa", "weighting.temperature=hot"])
    with pytest.raises(ValueError, match=r"weighting\.tasks is set from the data set"):
        load_config(None, [f"weighting.name={name}:make_dwa", "weighting.tasks=[a]"])
    with pytest.raises(ValueError, match=rf"'{name}:LIMIT' is a int, not a class or function"):
        load_config(None, [f"weighting.name={name}:LIMIT"])
    with pytest.raises(ValueError, match=r"'nowhere_xyz:f' cannot be imported: No module named"):
        load_config(None, ["model.name=nowhere_xyz:f"])
    with pytest.raises(ValueError, match=rf"'{name}:nothing' cannot be imported: .*nothing"):
        load_config(None, [f"model.name={name}:nothing"])


def test_paths_inside_attnmtl_need_no_permission(monkeypatch, tmp_path):
    monkeypatch.delenv(ALLOW_IMPORTS_ENV, raising=False)
    assert not imports_allowed()
    config = load_config(None, ["weighting.name=attnmtl.weighting.dwa:DynamicWeightAverage"])
    assert config.weighting.name == "attnmtl.weighting.dwa:DynamicWeightAverage"
    # ... but only to a registered component: any other function of attnmtl could be abused
    # (here, a config writing a file of its choice)
    for path, message in [
        ("attnmtl.run.checkpoint:write_json_atomic", "is not a registered dataset; refused"),
        ("attnmtl.cli:main", "is not a registered dataset; refused"),
        ("attnmtl.__main__:main", "a __main__ module cannot provide a component"),
    ]:
        with pytest.raises(ValueError, match=rf"^data\.name: dataset '{path}'.*{message}"):
            parse_config({"data": {"name": path, "path": str(tmp_path / "x.json"), "data": {}}})
    assert not (tmp_path / "x.json").exists()


def test_allow_imports_flag_trains_with_an_imported_weighting(probe_module, tmp_path, capsys):
    name, marker = probe_module
    (tmp_path / "d.csv").write_text("a,t\n" + "".join(f"{i},{i % 2}\n" for i in range(12)))
    (tmp_path / "c.yaml").write_text(
        f"name: imported\ndata: {{name: files, path: {tmp_path / 'd.csv'}, inputs: [a], "
        "tasks: {t: {kind: binary}}}\n"
        "model: {name: attention_mtl, encoder: mlp, encoder_options: {hidden_dims: [4]}}\n"
        f"weighting: {{name: '{name}:make_dwa', temperature: 3.0}}\n"
        "train: {epochs: 1, progress: false, tensorboard: false, report: false}\n"
    )
    out = tmp_path / "run"
    argv = ["train", "-c", str(tmp_path / "c.yaml"), "--out", str(out)]
    with pytest.raises(SystemExit) as refused:
        main(argv)
    assert refused.value.code == 2 and "--allow-imports" in capsys.readouterr().err
    assert not out.exists() and not marker.exists()
    with pytest.raises(SystemExit) as done:
        main([*argv, "--allow-imports"])
    assert done.value.code == 0, capsys.readouterr().err
    assert f"name: {name}:make_dwa" in (out / "config.yaml").read_text()
    assert marker.exists() and not imports_allowed()  # the flag lasts one command


# ---------------------------------------------------------------------------- run names


@pytest.mark.parametrize("name", ["../escape", "..", ".hidden", "/abs", "a/b", "a\\b", "", "a b"])
def test_a_run_name_cannot_be_a_path(name):
    with pytest.raises(ValueError, match=r"^name: "):
        parse_config({"name": name})
    with pytest.raises(ValueError, match=r"expected letters, digits"):
        new_run_dir(None, name)  # the second line of defence, for configs built in code


def test_generated_run_dirs_stay_in_runs_and_out_is_the_users_choice(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_config({"name": "my_run-1.2"}).name == "my_run-1.2"
    path = new_run_dir(None, "my_run-1.2")
    assert path.parent == Path("runs") and path.name.startswith("my_run-1.2-")
    elsewhere = tmp_path.parent / f"elsewhere-{uuid.uuid4().hex}" / "r"
    assert new_run_dir(elsewhere, "ignored") == elsewhere  # an explicit --out may be anywhere
    with pytest.raises(ValueError, match=r"^name: .*at most 100"):
        parse_config({"name": "a" * 101})
    assert os.listdir(tmp_path) == []  # nothing created before training
