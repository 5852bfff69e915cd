"""The HTML writer: number formats, escaping, generic tables of nested dicts, PNG embedding."""

import math
import re

import pytest

from attnmtl.report import html
from attnmtl.report.figures import as_float, primary_metric, task_series


def _cells(text):
    return [
        re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row) for row in re.findall(r"<tr>(.*?)</tr>", text)
    ]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (28566, "28,566"),
        (0.98500001, "0.9850"),
        (1134.1014, "1134.1014"),
        (2.5e-5, "2.5e-05"),
        (123456.0, "1.235e+05"),
        (3000.0, "3,000"),
        (None, "–"),
        (True, "yes"),
        ([36, 60], "36, 60"),
        (float("nan"), "nan"),
        ("gru", "gru"),
    ],
)
def test_values_are_formatted_short(value, text):
    assert html.format_value(value) == text


def test_cells_are_escaped_and_numbers_right_aligned():
    text = html.table(["a<b", "n"], [["<script>", 1.5]])
    assert "<script>" not in text and "&lt;script&gt;" in text and "a&lt;b" in text
    assert '<td class="num">1.5000</td>' in text


def test_a_dict_of_dicts_sharing_keys_is_one_table_with_a_row_per_name():
    data = {
        "total": 10,
        "digit": {"accuracy": 0.5, "loss": 2},
        "scale": {"mae": 0.25, "loss": 1, "sizes": {"batch": 1}},
    }
    assert _cells(html.nested_tables(data)) == [
        ["", "value"],
        ["total", "10"],
        ["", "accuracy", "loss", "mae", "sizes.batch"],
        ["digit", "0.5000", "2", "–", "–"],
        ["scale", "–", "1", "0.2500", "1"],
    ]


def test_unrelated_or_deeper_entries_get_their_own_tables_under_a_heading():
    data = {
        "parameters": {"total": 10, "per_task": {"a": 4, "b": 6}},
        "flops_by_op": {"aten.mm": 100},
        "shifts": {"noise": {"scores": {"digit": {"accuracy": 0.9}}, "note": "x"}},
    }
    text = html.nested_tables(data)
    headings = re.findall(r"<h(\d)>(.*?)</h\d>", text)
    assert headings == [("4", "parameters"), ("4", "flops_by_op"), ("4", "shifts"), ("5", "noise")]
    assert _cells(text) == [
        ["", "value"],
        ["total", "10"],
        ["", "a", "b"],
        ["per_task", "4", "6"],
        ["", "value"],
        ["aten.mm", "100"],
        ["", "value"],
        ["note", "x"],
        ["", "digit.accuracy"],
        ["scores", "0.9000"],
    ]


def test_only_png_bytes_are_embedded():
    with pytest.raises(ValueError, match="not a PNG"):
        html.png_image(b"GIF89a", "x")


def test_task_series_skip_absent_tasks_and_read_logged_nan_strings():
    events = [
        {"event": "train", "step": 1, "loss": {"a": 1.0, "b": 2.0}},
        {"event": "train", "step": 2, "loss": {"a": "nan"}},
        {"event": "train", "step": 3, "loss": {"b": 0.5}},
    ]
    series = task_series(events, "loss")
    assert series["b"] == ([1, 3], [2.0, 0.5])
    assert series["a"][0] == [1, 2] and math.isnan(series["a"][1][1])
    assert math.isnan(as_float("bad"))


def test_primary_metric_follows_the_task_rule():
    assert primary_metric({"accuracy": 1, "f1": 1, "loss": 1}) == "accuracy"
    assert primary_metric({"loss": 1, "mae": 1, "rmse": 1, "r2": 1}) == "mae"
    assert primary_metric({"loss": 1, "auroc": 1}) == "auroc"
    assert primary_metric({"loss": 1}) == "loss"
