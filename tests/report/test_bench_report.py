"""The bench mtl report: the results table, the Pareto front and plots, the results' shape."""

import base64
import copy
import re

import pytest

from attnmtl.report import build_bench_report, pareto_figure
from attnmtl.report.bench_report import check_bench_results, pareto_pairs
from attnmtl.report.figures import pareto_front

RESULTS = {
    "tasks": {
        "a": {"metric": "accuracy", "higher_is_better": True},
        "b": {"metric": "mae", "higher_is_better": False},
    },
    "single": {"a": {"mean": 0.90, "std": 0.01}, "b": {"mean": 0.50, "std": 0.02}},
    "multi": {
        "equal": {
            "tasks": {"a": {"mean": 0.92, "std": 0.01}, "b": {"mean": 0.55, "std": 0.03}},
            "delta_m": {"mean": -3.89, "std": 1.0},
        },
        "famo": {
            "tasks": {"a": {"mean": 0.91, "std": 0.02}, "b": {"mean": 0.45, "std": float("nan")}},
            "delta_m": {"mean": 5.56, "std": 0.5},
        },
        "rlw": {
            "tasks": {"a": {"mean": 0.89, "std": 0.01}, "b": {"mean": 0.60, "std": 0.01}},
            "delta_m": {"mean": -10.56, "std": 2.0},
        },
    },
    "seeds": 3,
}


def test_pareto_front_keeps_the_points_no_other_beats_on_both_scores():
    points = [(0.92, 0.55), (0.91, 0.45), (0.89, 0.60), (0.91, 0.45)]
    # a higher is better, b lower: rlw (0.89, 0.60) is worse on both than either other point;
    # the two equal famo points do not dominate each other.
    assert pareto_front(points, (True, False)) == [True, True, False, True]
    # both higher is better: (0.89, 0.60) now has the best b, and (0.91, 0.45) is dominated
    # by (0.92, 0.55).
    assert pareto_front(points, (True, True)) == [True, False, True, False]


def test_the_table_bolds_each_columns_best_by_its_direction(tmp_path):
    page = build_bench_report(RESULTS, tmp_path).read_text()
    rows = re.findall(r"<tr>(.*?)</tr>", page)
    cells = [re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row) for row in rows]
    assert cells[0] == ["model", "a accuracy ↑", "b mae ↓", "Δm (%) ↑"]
    by_name = {row[0]: row[1:] for row in cells[1:]}
    assert by_name["single-task baselines"] == [
        "0.9000 ± 0.0100",
        "0.5000 ± 0.0200",
        "0 (reference)",
    ]
    assert by_name["multi-task: equal"][0] == "<strong>0.9200 ± 0.0100</strong>"  # highest a
    assert by_name["multi-task: famo"][1] == "<strong>0.4500</strong>"  # lowest b; NaN std
    assert by_name["multi-task: famo"][2] == "<strong>5.56 ± 0.50</strong>"  # best Δm
    assert by_name["multi-task: rlw"] == ["0.8900 ± 0.0100", "0.6000 ± 0.0100", "-10.56 ± 2.00"]
    assert "<h2>Setup</h2>" in page and "seeds" in page


def test_a_lower_is_better_axis_is_inverted_so_that_up_is_better():
    ax = pareto_figure(RESULTS, "a", "b").axes[0]
    assert not ax.xaxis_inverted() and ax.yaxis_inverted()


def test_plots_every_pair_of_up_to_three_tasks_else_the_chosen_or_first_two(tmp_path):
    assert pareto_pairs(["a", "b", "c"], None) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert pareto_pairs(["a", "b", "c", "d"], None) == [("a", "b")]
    assert pareto_pairs(["a", "b", "c", "d"], ("d", "b")) == [("d", "b")]
    assert pareto_pairs(["a"], None) == []
    with pytest.raises(ValueError, match=r"pareto tasks \['a', 'z'\]; expected two different"):
        pareto_pairs(["a", "b"], ("a", "z"))
    path = build_bench_report(RESULTS, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out" / "plots").iterdir()) == ["pareto-a-b.png"]
    page = path.read_text()
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    assert [base64.b64decode(i) for i in images] == [
        (tmp_path / "out" / "plots" / "pareto-a-b.png").read_bytes()
    ]
    assert "http://" not in page and "https://" not in page and "<script" not in page


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        (("multi",), "'multi' is missing or not a mapping"),
        (("single", "b"), "single.b must be {'mean': x, 'std': s}"),
        (("multi", "famo", "tasks", "a"), "multi.famo.tasks.a must be"),
        (("multi", "rlw", "delta_m"), "multi.rlw.delta_m must be"),
        (("tasks", "a", "metric"), "tasks.a must hold 'metric' and 'higher_is_better'"),
    ],
)
def test_results_of_another_shape_are_refused_naming_the_key(tmp_path, path, needle):
    broken = copy.deepcopy(RESULTS)
    parent = broken
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    assert check_bench_results(RESULTS) == ["a", "b"]
    with pytest.raises(ValueError, match=re.escape(needle)):
        build_bench_report(broken, tmp_path)
    assert not (tmp_path / "report.html").exists()
