"""Time-series preprocessing (attnmtl.data.windows) against hand-computed windows, and through
the files data set, the metrics, predict and export (targets relative to each window)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from attnmtl.core.output import MultiTaskOutput
from attnmtl.data.files import build_files
from attnmtl.data.splits import target_stats
from attnmtl.data.windows import (
    EPS,
    Window,
    anchors,
    from_anchor,
    to_anchor,
    transform_windows,
)
from attnmtl.encoders import RevIN
from attnmtl.eval.metrics import TaskEvaluator
from attnmtl.models import build_encoder

X = torch.tensor([[[1.0, 10.0], [2.0, 10.0], [4.0, 13.0]]])  # (1, T=3, F=2)


def test_center_scale_and_difference_match_hand_computed_windows():
    last = transform_windows(X, None, Window(center="last"))
    assert last[0, :, 0].tolist() == [-3.0, -2.0, 0.0]
    assert last[0, :, 1].tolist() == [-3.0, -3.0, 0.0]
    mean = transform_windows(X, None, Window(center="mean"))
    assert torch.allclose(mean[0, :, 0], torch.tensor([1 - 7 / 3, 2 - 7 / 3, 4 - 7 / 3]))
    scaled = transform_windows(X, None, Window(center="mean", scale=True))
    var = ((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 3  # population variance
    expected = (torch.tensor([1.0, 2.0, 4.0]) - 7 / 3) / math.sqrt(var + EPS)
    assert torch.allclose(scaled[0, :, 0], expected)
    diff = transform_windows(X, None, Window(difference=True))
    assert diff.shape == (1, 2, 2) and diff[0].tolist() == [[1.0, 0.0], [2.0, 3.0]]
    # a constant cancels in a difference: centring first changes nothing
    assert torch.equal(transform_windows(X, None, Window("last", difference=True)), diff)
    assert torch.equal(transform_windows(X, None, Window()), X)


def test_padded_windows_use_their_real_steps_and_keep_their_padding():
    x = torch.tensor([[[1.0], [3.0], [99.0]], [[2.0], [4.0], [8.0]]])  # first: 2 real steps
    lengths = torch.tensor([2, 3])
    out = transform_windows(x, lengths, Window(center="last"))
    assert out[0, :, 0].tolist() == [-2.0, 0.0, 99.0]  # last real value 3; padding as it was
    assert out[1, :, 0].tolist() == [-6.0, -4.0, 0.0]
    mean = transform_windows(x, lengths, Window(center="mean"))
    assert mean[0, :, 0].tolist() == [-1.0, 1.0, 99.0]
    with pytest.raises(ValueError, match="difference with padded sequences"):
        transform_windows(x, lengths, Window(difference=True))


def test_anchors_are_the_window_centre_and_scale_and_invert_exactly():
    a = anchors(X, None, "sequence", Window(center="none"), {"next": 0, "other": 1})
    assert a["next"].tolist() == [[4.0, 1.0]]  # "none" anchors on the last value
    assert a["other"].tolist() == [[13.0, 1.0]]
    scaled = anchors(X, None, "sequence", Window(center="mean", scale=True), {"next": 0})
    var = ((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 3
    assert torch.allclose(scaled["next"], torch.tensor([[7 / 3, math.sqrt(var + EPS)]]))
    table = torch.tensor([[5.0, 2.0], [7.0, 3.0]])
    assert anchors(table, None, "table", None, {"y": 1})["y"].tolist() == [[2.0, 1.0], [3.0, 1.0]]
    values = torch.tensor([[0.5, -1.0], [2.0, 0.0]])  # (N, C): one anchor for every output
    pair = torch.tensor([[10.0, 2.0], [-1.0, 0.5]])
    assert to_anchor(values, pair).tolist() == [[11.0, 8.0], [0.0, -1.0]]
    assert torch.allclose(from_anchor(to_anchor(values, pair), pair), values)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"center": "median"}, r"window.center='median'; expected one of: none, last, mean"),
        ({"scale": "yes"}, r"window.scale='yes'; expected true or false"),
        ({"lag": 1}, r"window: unknown option 'lag'"),
        ("last", r"window='last'; expected a mapping"),
    ],
)
def test_bad_window_options_are_one_line(options, message):
    with pytest.raises(ValueError, match=message):
        Window.parse(options)


def series_file(tmp_path, n=60, steps=8):
    """One drifting series as a column block, the next value as a regression target."""
    rng = np.random.default_rng(0)
    walk = np.cumsum(0.5 + rng.normal(size=n + steps))
    frame = pd.DataFrame({f"a_t{t}": walk[np.arange(n) + t] for t in range(steps)})
    frame["next"] = walk[np.arange(n) + steps]
    frame.loc[3, "next"] = np.nan  # unlabelled
    frame["split"] = ["train"] * (n - 20) + ["test"] * 20
    path = tmp_path / "series.csv"
    frame.to_csv(path, index=False)
    return path, frame


def build_series(path, **options):
    tasks = {"next": {"kind": "regression", "relative_to": "a"}}
    return build_files(
        path, {"a": "a_t*"}, tasks, layout="sequence", split_column="split", **options
    )


def test_relative_targets_are_next_minus_last_and_metrics_are_natural(tmp_path):
    path, frame = series_file(tmp_path)
    splits = build_series(
        path, window={"center": "last"}, standardize=False, standardize_targets=False
    )
    test = splits.test
    rows = frame[frame.split == "test"]
    last = rows["a_t7"].to_numpy()
    np.testing.assert_allclose(test.labels["next"].numpy(), rows["next"] - last, atol=1e-5)
    np.testing.assert_allclose(test.anchors["next"][:, 0].numpy(), last, rtol=1e-6)
    assert splits.train.labels["next"][3] == 0  # an unlabelled filler stays 0
    np.testing.assert_allclose(test.meta["raw_inputs"][:, :, 0].numpy(), rows.filter(like="a_t"))
    assert test.inputs[:, -1].abs().max() == 0  # each window ends at 0
    assert splits.info["relative_to"] == {"next": {"input": "a", "index": 0}}
    assert splits.info["window"] == {"center": "last", "scale": False, "difference": False}
    # a prediction of 0 (next = last) scores as the last-value forecast, in natural units
    evaluator = TaskEvaluator(splits.tasks, target_stats(splits.info, splits.tasks))
    zeros = MultiTaskOutput({"next": torch.zeros(len(test), 1)}, {})
    evaluator.update(zeros, test.labels, test.label_mask, [len(test)], test.anchors)
    mae = float(np.mean(np.abs(rows["next"] - last)))
    assert evaluator.compute()["next"]["mae"] == pytest.approx(mae, rel=1e-5)


def test_relative_targets_are_standardised_after_and_inverted_before_scoring(tmp_path):
    path, _ = series_file(tmp_path)
    splits = build_series(path, window={"center": "mean", "scale": True}, standardize_targets=True)
    test, stats = splits.test, target_stats(splits.info, splits.tasks)
    evaluator = TaskEvaluator(splits.tasks, stats)
    perfect = MultiTaskOutput({"next": test.labels["next"][:, None]}, {})
    evaluator.update(perfect, test.labels, test.label_mask, [len(test)], test.anchors)
    assert evaluator.compute()["next"]["mae"] == pytest.approx(0.0, abs=1e-4)
    train = splits.train
    kept = train.labels["next"][train.label_mask["next"]]
    assert abs(float(kept.mean())) < 1e-5 and float(kept.std(correction=0)) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("tasks", "options", "message"),
    [
        ({"next": {"kind": "binary", "relative_to": "a"}}, {}, "relative_to applies to regression"),
        ({"next": {"kind": "regression", "relative_to": "z"}}, {}, r"relative_to='z'; expected"),
        ({"next": {"kind": "regression"}}, {"layout": "table", "window": {}}, "window applies"),
    ],
)
def test_bad_relative_or_window_options_are_one_line(tmp_path, tasks, options, message):
    path, _ = series_file(tmp_path)
    inputs = {"a": "a_t*"} if options.get("layout") != "table" else ["a_t0"]
    options = {"layout": "sequence", **options}
    with pytest.raises(ValueError, match=message):
        build_files(path, inputs, tasks, split_column="split", **options)


def test_a_table_target_may_be_relative_to_an_input_column(tmp_path):
    path, frame = series_file(tmp_path)
    tasks = {"next": {"kind": "regression", "relative_to": "a_t7"}}
    splits = build_files(
        path, ["a_t6", "a_t7"], tasks, split_column="split", standardize_targets=False
    )
    rows = frame[frame.split == "test"]
    np.testing.assert_allclose(splits.test.labels["next"], rows["next"] - rows["a_t7"], atol=1e-5)


def test_revin_normalises_each_window_and_learns_its_affine_map():
    torch.manual_seed(0)
    x = torch.randn(4, 6, 3) * 5 + 7
    norm = RevIN(3)
    out = norm(x)
    assert torch.allclose(out.mean(1), torch.zeros(4, 3), atol=1e-5)
    var = x.var(1, correction=0)
    assert torch.allclose(out.std(1, correction=0), torch.sqrt(var / (var + EPS)), atol=1e-5)
    out.sum().backward()
    assert norm.bias.grad is not None and norm.weight.grad is not None
    lengths = torch.tensor([6, 3, 4, 1])
    padded = norm(x, lengths)
    assert torch.equal(padded[1, 3:], x[1, 3:])  # padding as it was
    assert torch.allclose(padded[1, :3], norm(x[1:2, :3])[0], atol=1e-6)
    encoder = build_encoder("rnn", (6, 3), "sequence", hidden_dim=8, revin=True)
    assert torch.allclose(encoder(x).pooled, encoder(x * 10 + 3).pooled, atol=1e-4)
    with pytest.raises(ValueError, match="revin normalises windows of steps"):
        build_encoder("mlp", (3,), "table", revin=True)
