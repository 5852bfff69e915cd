"""bench transfer: the summary's arithmetic, the kinds check, and one real (slow) comparison."""

from __future__ import annotations

import pytest

from attnmtl.bench.transfer import BUILDERS, check_kinds, render, run, summarise


def test_summary_gain_and_std_rule() -> None:
    exp = BUILDERS["cross_task"](1)
    entry = summarise(exp, {"control": [0.40, 0.44, 0.42], "transfer": [0.60, 0.62, 0.64]})
    assert entry["control"]["mean"] == pytest.approx(0.42)
    assert entry["control"]["std"] == pytest.approx(0.02)
    assert entry["gain"] == pytest.approx(0.20)
    assert entry["beats_std"] is True
    close = summarise(exp, {"control": [0.40, 0.50], "transfer": [0.44, 0.48]})
    assert close["beats_std"] is False  # gain 0.01 < the control's std 0.07


def test_lower_is_better_metric_flips_the_gain() -> None:
    exp = BUILDERS["cross_task"](1)
    exp.metric = "mae"
    entry = summarise(exp, {"control": [0.5, 0.5], "transfer": [0.4, 0.4]})
    assert entry["gain"] == pytest.approx(0.1)


def test_kinds_are_checked() -> None:
    assert check_kinds(["teacher", " fusion"]) == ["teacher", "fusion"]
    with pytest.raises(ValueError, match="expected some of"):
        check_kinds(["teacher", "distill"])


def test_every_experiment_config_validates(tmp_path) -> None:
    from attnmtl.run.config import parse_config

    runs = {"teacher": tmp_path / "t", "source": tmp_path / "s"}
    for kind, builder in BUILDERS.items():
        if kind == "textmt":
            pytest.importorskip("transformers")
        exp = builder(2)
        for config in (*exp.prerequisites.values(), exp.control(runs), exp.transfer(runs)):
            assert parse_config(config).train.epochs in (2, 20)


@pytest.mark.slow
def test_cross_task_bench_runs_and_reports(tmp_path) -> None:
    results = run(["cross_task"], seeds=1, epochs=1, out=tmp_path / "b", log=lambda s: None)
    entry = results["kinds"]["cross_task"]
    assert len(entry["control"]["runs"]) == len(entry["transfer"]["runs"]) == 1
    assert 0 <= entry["transfer"]["mean"] <= 1
    assert set(entry["tasks"]) == {"digit", "position", "scale"}
    assert entry["tasks"]["position"]["transfer"]["runs"] == entry["transfer"]["runs"]
    assert (tmp_path / "b" / "cross_task" / "transfer-seed0" / "summary.json").is_file()
    assert render(results).row_count == 1
