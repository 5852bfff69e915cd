"""Reports: a run's self-contained HTML page, the ``bench mtl`` page, attention figures.

``build_report(run_dir)`` writes ``report.html`` (config, metrics with their directions,
training curves, task weights, attention on test inputs, efficiency and generalization tables)
and ``plots/*.png`` into a run directory; ``build_bench_report(results, out_dir)`` the benchmark's
table and Pareto plots; ``log_attention_images(writer, model, batch, step)`` draws each task's
attention into TensorBoard. Figures are matplotlib figures drawn with Agg, without pyplot.
"""

from attnmtl.report.attention import (
    AttentionExamples,
    AttentionImages,
    attention_figure,
    attention_note,
    collect_attention,
    log_attention_images,
)
from attnmtl.report.bench_report import build_bench_report
from attnmtl.report.figures import (
    figure_png,
    figure_rgb,
    loss_figure,
    pareto_figure,
    validation_figure,
    weights_figure,
)
from attnmtl.report.run_report import build_report

__all__ = [
    "AttentionExamples",
    "AttentionImages",
    "attention_figure",
    "attention_note",
    "build_bench_report",
    "build_report",
    "collect_attention",
    "figure_png",
    "figure_rgb",
    "log_attention_images",
    "loss_figure",
    "pareto_figure",
    "validation_figure",
    "weights_figure",
]
