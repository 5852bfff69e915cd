"""The weighting benchmark times every variant against equal weighting in one process."""

import json

import pytest

from attnmtl.bench.weighting import ReferenceMTL, gradient_methods, render, run
from attnmtl.cli import main
from attnmtl.core.tasks import Task


def test_reference_model_is_the_issues_mlp():
    model = ReferenceMTL([Task(f"t{i}", "multiclass", 10) for i in range(3)])
    shapes = [tuple(p.shape) for p in model.shared_parameters()]
    assert shapes == [(256, 64), (256,), (256, 256), (256,)]
    assert [tuple(model.heads[t].weight.shape) for t in model.tasks] == [(10, 256)] * 3


def test_results_have_the_documented_shape_and_ratios():
    results = run(
        task_counts=(2, 3),
        methods=["mgda"],
        batch_size=8,
        rounds=2,
        steps=1,
        warmup=0,
        threads=None,
    )
    assert list(results) == ["2", "3"]
    for entries in results.values():
        assert list(entries) == ["equal", "mgda", "mgda:features"]
        ew = entries["equal"]["ms"]
        for key in ("mgda", "mgda:features"):
            entry = entries[key]
            assert set(entry) == {"ms", "ratio_to_ew", "naive_ms", "naive_ratio_to_ew"}
            assert entry["ratio_to_ew"] == pytest.approx(entry["ms"] / ew)
            assert entry["naive_ratio_to_ew"] == pytest.approx(entry["naive_ms"] / ew)
    assert render(results).row_count == 6


def test_mgda_ub_is_reported_as_mgda_features_and_bad_names_are_refused():
    assert "mgda" in gradient_methods() and "mgda_ub" not in gradient_methods()
    with pytest.raises(ValueError, match="method 'equal'; expected a gradient-based strategy"):
        run(task_counts=(2,), methods=["equal"])
    with pytest.raises(ValueError, match="mode 'rep'; expected one of: parameters, features"):
        run(task_counts=(2,), methods=["mgda"], modes=["rep"])


def test_cli_writes_the_json(tmp_path, capsys):
    out = tmp_path / "w.json"
    argv = ["bench", "weighting", "--tasks", "2", "--methods", "mgda", "--modes", "features"]
    argv += ["--rounds", "1", "--steps", "1", "--batch-size", "8", "--threads", "1"]
    argv += ["--no-naive", "--json", str(out)]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    data = json.loads(out.read_text())
    assert set(data["2"]) == {"equal", "mgda:features"}
    assert set(data["2"]["mgda:features"]) == {"ms", "ratio_to_ew"}
    assert "mgda:features" in capsys.readouterr().out


def test_every_method_runs_in_every_mode_it_admits():
    """The benchmark covers every gradient method (GradNorm's after_step included); methods
    whose buffers hold parameter gradients have no features row."""
    results = run(task_counts=(2,), batch_size=8, rounds=1, steps=2, warmup=0, threads=None)
    keys = set(results["2"])
    for method in gradient_methods():
        assert method in keys
    assert "graddrop:features" in keys and "moco:features" not in keys
    assert "per_group:features" not in keys and "db_mtl:features" not in keys


def test_scaled_memory_bench_runs_each_engine_in_its_own_process():
    from attnmtl.bench.weighting import memory, render_memory, width_for

    assert width_for(10_000_000, 4) == 1814  # 65·W + 3·(W + 1)·W ≈ 10M
    results = memory(
        20_000,
        depth=2,
        count=2,
        methods=["mgda"],
        engines=["batched", "gramian"],
        batch_size=8,
        steps=1,
        threads=1,
    )
    assert results["params"] == sum(
        p.numel()
        for p in ReferenceMTL([Task("a", "binary")], hidden=results["width"]).encoder.parameters()
    )
    for key in ("mgda (batched)", "mgda (gramian)"):
        entry = results[key]
        assert entry["extra_bytes"] == entry["peak_bytes"] - results["equal"]["peak_bytes"]
        assert entry["extra_over_params"] == pytest.approx(
            entry["extra_bytes"] / (4 * results["params"])
        )
    assert render_memory(results).row_count == 3
