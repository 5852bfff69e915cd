"""bench transfer: the summary's arithmetic, the kinds check, and one real (slow) comparison."""

from __future__ import annotations

import pytest

from attnmtl.bench.transfer import BUILDERS, check_kinds, check_reuse, render, run, summarise


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

    runs = {name: tmp_path / name for name in ("teacher", "source", "topic", "sentiment")}
    for kind, builder in BUILDERS.items():
        if kind.startswith("textmt") or kind == "multi_teacher":
            pytest.importorskip("transformers")
        exp = builder(2)
        made = [make(runs) for make in exp.variants().values()]
        for config in (*exp.prerequisites.values(), *made):
            assert parse_config(config).train.epochs in (2, 3, 20)


def test_arms_are_summarised_against_the_control() -> None:
    exp = BUILDERS["textmt_tuned"](1)
    assert list(exp.variants()) == ["control", "transfer", "kd", "attention+kd"]
    scores = {"control": [0.8, 0.82], "transfer": [0.81, 0.83], "kd": [0.9, 0.9]}
    entry = summarise(exp, {**scores, "attention+kd": [0.7, 0.9]})
    assert entry["arms"]["kd"]["gain"] == pytest.approx(0.09)
    assert entry["arms"]["kd"]["beats_std"] is True
    assert entry["arms"]["attention+kd"]["beats_std"] is False  # its own std is 0.14
    table = render({"seeds": 2, "epochs": 1, "kinds": {"textmt_tuned": entry}})
    assert table.row_count == 3


def test_the_tuned_experiments_teach_from_fine_tuned_runs(tmp_path) -> None:
    pytest.importorskip("transformers")
    runs = {name: tmp_path / name for name in ("teacher", "topic", "sentiment")}
    tuned = BUILDERS["textmt_tuned"](2)
    assert tuned.prerequisites["teacher"]["model"]["encoder"] == "hf"
    kd = tuned.arms["kd"](runs)["transfer"]
    assert kd["pairs"] == [] and kd["logits"]["weight"] == 1.0
    multi = BUILDERS["multi_teacher"](2)
    assert {t: c["data"]["tasks"] for t, c in multi.prerequisites.items()} == {
        "topic": ["topic"],
        "sentiment": ["sentiment"],
    }
    teachers = multi.transfer(runs)["transfer"]["teachers"]
    assert {t: v["teacher"] for t, v in teachers.items()} == {
        t: str(runs[t]) for t in ("topic", "sentiment")
    }
    assert all(v["anneal"] for v in multi.arms["bam"](runs)["transfer"]["teachers"].values())


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


def test_reuse_names_a_prerequisite_and_a_finished_run(tmp_path) -> None:
    (tmp_path / "summary.json").write_text("{}")
    assert check_reuse(["fusion"], [f"fusion/source={tmp_path}"]) == {"fusion/source": tmp_path}
    with pytest.raises(ValueError, match="fusion has no prerequisite 'teacher'"):
        check_reuse(["fusion"], [f"fusion/teacher={tmp_path}"])
    with pytest.raises(ValueError, match="KIND among: fusion"):
        check_reuse(["fusion"], [f"teacher/teacher={tmp_path}"])
    with pytest.raises(ValueError, match="not a finished run"):
        check_reuse(["fusion"], [f"fusion/source={tmp_path / 'nope'}"])
