"""The report's transfer-term curves and attention-fusion heatmaps."""

from __future__ import annotations

import numpy as np

from attnmtl.report.attention import AttentionExamples, fusion_figure
from attnmtl.report.figures import transfer_figure


def test_transfer_figure_draws_one_line_per_term() -> None:
    events = [
        {
            "event": "train",
            "step": s,
            "transfer": {"cross:digit->position": 1.0 / s, "logits:digit": 0.5},
        }
        for s in (1, 2, 3)
    ]
    figure = transfer_figure(events)
    (ax,) = figure.axes
    assert sorted(line.get_label() for line in ax.get_lines()) == [
        "cross:digit->position",
        "logits:digit",
    ]
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), [1.0, 0.5, 1 / 3])


def test_fusion_figure_shows_each_example_over_its_real_steps() -> None:
    weights = np.random.default_rng(0).dirichlet([1.0, 1.0], size=(2, 6))  # (N, T, K)
    examples = AttentionExamples(
        layout="sequence",
        inputs=np.zeros((2, 6, 1), dtype=np.float32),
        lengths=[6, 4],
        attention={},
        gates=False,
        labels={},
        preds={},
        fusion=weights,
    )
    figure = fusion_figure(examples)
    panels = [ax for ax in figure.axes if ax.get_images()]
    assert len(panels) == 2
    shown = panels[1].get_images()[0].get_array()
    assert shown.shape == (2, 4)  # sources × the 4 real steps of example 1
    np.testing.assert_allclose(shown, weights[1, :4].T)
    means = ", ".join(f"{w:.2f}" for w in weights[0].mean(0))
    assert panels[0].get_title() == f"#0: mean weight per source {means}"
