"""A run's report.html: every section, self-contained images, the run's own numbers."""

import base64
import json
import re
import shutil
from html.parser import HTMLParser

import pytest
import torch

from attnmtl.cli import main
from attnmtl.report import build_report
from attnmtl.report.html import format_value

SECTIONS = ["summary", "config", "metrics", "curves", "weights", "attention"]
PNG = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """The section ids, image sources and alt texts, and every href/src of a page."""

    def __init__(self, text):
        super().__init__()
        self.sections, self.images, self.alts, self.links = [], [], [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs["id"])
        if tag == "img":
            self.images.append(attrs["src"])
            self.alts.append(attrs.get("alt"))
        self.links += [attrs[k] for k in ("href", "src") if k in attrs and tag != "img"]


def section_text(text, ident):
    return re.search(rf'<section id="{ident}">(.*?)</section>', text, re.S).group(1)


def test_every_section_is_there_and_every_image_is_an_embedded_png(tiny_run, tiny_report):
    text = tiny_report.read_text()
    page = Page(text)
    # train_run measured efficiency and generalization (mnist1d-mt has shift presets)
    assert page.sections == [*SECTIONS, "efficiency", "generalization"]
    assert len(page.images) == 3 + 2  # loss, validation, weights + one attention map per task
    decoded = []
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        decoded.append(base64.b64decode(src.split(",", 1)[1], validate=True))
        assert decoded[-1].startswith(PNG)
    files = sorted((tiny_run / "plots").iterdir())
    assert [f.name for f in files] == [
        "attention-digit.png",
        "attention-scale.png",
        "loss.png",
        "validation.png",
        "weights.png",
    ]
    assert sorted(f.read_bytes() for f in files) == sorted(decoded)  # the same images
    assert [a for a in page.alts if a.startswith("attention")] == [
        f"attention of task {t}" for t in ("digit", "scale")
    ]
    assert not re.search(r"https?://", text) and "<script" not in text
    assert all(link.startswith(("#", "data:")) for link in page.links)


def test_training_ends_with_efficiency_generalization_and_the_report(tiny_run):
    summary = json.loads((tiny_run / "summary.json").read_text())
    efficiency = summary["efficiency"]
    assert efficiency["flops_per_sample"] > 0 and efficiency["train_samples_per_s"] > 0
    assert efficiency["latency_ms_p50"] <= efficiency["latency_ms_p95"]
    assert set(summary["generalization"]["shifts"]) == {"noise", "translation", "scale"}
    assert (tiny_run / "report.html").is_file()


def test_the_metrics_and_config_are_the_runs_own(tiny_run, tiny_report):
    text = tiny_report.read_text()
    summary = json.loads((tiny_run / "summary.json").read_text())
    metrics = section_text(text, "metrics")
    test_table = metrics.split("<h3>Validation</h3>")[0]
    columns = list(dict.fromkeys(m for values in summary["tasks"].values() for m in values))
    header = re.findall(r"<th>(.*?)</th>", test_table)
    assert [h.split(" ")[0] for h in header] == ["task", *columns]
    for task, values in summary["tasks"].items():
        row = re.search(rf"<tr><td>{task}</td>(.*?)</tr>", test_table).group(1)
        primary = "mae" if task == "scale" else "accuracy"
        expected = [format_value(values.get(m)) for m in columns]  # "–" where absent
        expected[columns.index(primary)] = f"<strong>{expected[columns.index(primary)]}</strong>"
        assert re.findall(r"<td[^>]*>(.*?)</td>", row) == expected
    assert "<th>accuracy ↑</th>" in metrics and "<th>mae ↓</th>" in metrics
    assert "<h3>Validation</h3>" in metrics and f"{summary['val']['scale']['mae']:.4f}" in metrics
    config = section_text(text, "config")
    assert "name: uncertainty" in config and "hidden_dim: 8" in config


def test_efficiency_and_generalization_tables_appear_when_the_summary_has_them(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    summary = json.loads((run / "summary.json").read_text())
    summary["efficiency"] = {"latency": {"p50_ms": 1.2345, "p95_ms": 2.5}, "flops": 4321}
    summary["generalization"] = {"noise=0.1": {"digit": {"accuracy": 0.8125, "drop": 0.0625}}}
    (run / "summary.json").write_text(json.dumps(summary))
    state = torch.get_rng_state()
    text = build_report(run, examples=1).read_text()
    assert torch.equal(state, torch.get_rng_state())  # rebuilding the model drew nothing
    assert Page(text).sections == [*SECTIONS, "efficiency", "generalization"]
    efficiency = section_text(text, "efficiency")
    assert '<td>flops</td><td class="num">4,321</td>' in efficiency
    assert re.search(
        r"<td>latency</td><td class=\"num\">1.2345</td><td class=\"num\">2.5000", efficiency
    )
    generalization = section_text(text, "generalization")
    assert "<th>digit.accuracy</th><th>digit.drop</th>" in generalization
    assert "0.8125" in generalization and "0.0625" in generalization


def test_a_run_that_has_not_finished_gets_notes_instead_of_metrics(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "summary.json").unlink()
    shutil.rmtree(run / "checkpoints")
    text = build_report(run).read_text()
    assert Page(text).sections == SECTIONS
    assert "No summary.json" in section_text(text, "summary")
    assert "No attention figures: the run has no checkpoint yet" in section_text(text, "attention")


def test_cli_report_writes_the_page_and_refuses_what_is_not_a_run(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("report.html", "plots"))
    with pytest.raises(SystemExit) as done:
        main(["report", str(run), "--examples", "1"])
    assert done.value.code == 0 and (run / "report.html").is_file()
    assert capsys.readouterr().out.strip() == f"report: {run / 'report.html'}"
    empty = tmp_path / "empty"
    empty.mkdir()
    for target in (empty, tmp_path / "missing"):
        with pytest.raises(SystemExit) as done:
            main(["report", str(target)])
        err = capsys.readouterr().err
        assert done.value.code == 2
        assert err == f"attnmtl: error: {target}: not a run directory (no config.yaml)\n"
    assert list(empty.iterdir()) == [] and not (tmp_path / "missing").exists()


def test_gradient_methods_log_task_gradient_conflicts_and_the_report_draws_them(tiny_run, tmp_path):
    from attnmtl.pipeline import train_run
    from attnmtl.run.config import parse_config

    from .conftest import TINY

    events = [json.loads(x) for x in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert not any("conflict" in e for e in events)  # uncertainty forms no task gradients
    config = {**TINY, "weighting": {"name": "pcgrad"}, "train": {**TINY["train"], "epochs": 1}}
    run_dir, _ = train_run(parse_config(config), tmp_path / "run")
    events = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [e for e in events if e["event"] == "train"]
    assert train and all(set(e["conflict"]) == {"cos", "norm"} for e in train)
    for e in train:
        assert set(e["conflict"]["cos"]) == {"digit|scale"}
        assert -1 - 1e-9 <= e["conflict"]["cos"]["digit|scale"] <= 1 + 1e-9
        assert all(n > 0 for n in e["conflict"]["norm"].values())
    # PCGrad projects exactly when the pair conflicts: the logged weights say so too
    for e in train:
        projected = any(abs(w - 1.0) > 1e-9 for w in e["weights"].values())
        assert projected == (e["conflict"]["cos"]["digit|scale"] < 0)
    page = Page(build_report(run_dir, examples=1).read_text())
    assert "task gradient cosines and norms against step" in page.alts
    assert (run_dir / "plots" / "conflict.png").exists()
