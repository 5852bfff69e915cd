"""The attention benchmark runs end to end at toy sizes and measures what it claims."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from attnmtl.bench.attention import (
    FUSED,
    REFERENCE,
    TORCH_MHA,
    WEIGHTS,
    main,
    render,
    run,
    running_peak,
    summary_lines,
)

VARIANTS = {REFERENCE, FUSED, WEIGHTS, TORCH_MHA}


def test_run_structure_times_and_reference_ratio() -> None:
    results = run(seq_lens=(16, 32), batch=2, heads=2, head_dim=8, repeats=2, warmup=0)
    json.dumps(results)  # JSON-able
    assert results["config"]["embed_dim"] == 16
    assert list(results["results"]) == ["16", "32"]
    for rows in results["results"].values():
        assert set(rows) == VARIANTS
        for row in rows.values():
            assert row["ms"] > 0
            assert len(row["times_ms"]) == 2
            assert all(t > 0 for t in row["times_ms"])
            assert row["ratio_to_sdpa"] > 0
            assert row["peak_mb"] >= 0
        assert rows[REFERENCE]["ratio_to_sdpa"] == 1.0
    text = io.StringIO()
    Console(file=text, width=200).print(render(results))
    assert "raw SDPA (nanoGPT-style)" in text.getvalue()
    assert any("Fused / raw SDPA" in line for line in summary_lines(results))


def test_weights_memory_exceeds_fused_by_the_attention_matrix() -> None:
    batch, heads, seq_len = 4, 4, 256
    results = run(seq_lens=(seq_len,), batch=batch, heads=heads, head_dim=8, repeats=1, warmup=0)
    rows = results["results"][str(seq_len)]
    matrix_mb = batch * heads * seq_len * seq_len * 4 / 1e6  # one float32 (B, H, T, T) tensor
    assert rows[WEIGHTS]["peak_mb"] > rows[FUSED]["peak_mb"] + 2 * matrix_mb


def test_fused_memory_grows_linearly_in_t() -> None:
    results = run(
        seq_lens=(256, 1024), batch=2, heads=2, head_dim=8, repeats=1, warmup=0, max_weights_gb=0
    )
    (growth,) = results["fused_memory_growth"]
    assert growth["t_ratio"] == 4
    assert 0.8 < growth["exponent"] < 1.3  # quadratic would be 2


def test_memory_guard_skips_the_weights_variant() -> None:
    results = run(seq_lens=(32,), batch=2, heads=2, head_dim=8, repeats=1, max_weights_gb=1e-6)
    row = results["results"]["32"][WEIGHTS]
    assert row["skipped"] == "memory"
    assert row["ms"] is None and row["peak_mb"] is None
    text = io.StringIO()
    Console(file=text, width=200).print(render(results))
    assert "skipped (memory)" in text.getvalue()


def test_running_peak() -> None:
    assert running_peak([]) == 0
    assert running_peak([-5, 3]) == 0
    assert running_peak([4, 6, -8, 3, -5]) == 10


def test_main_prints_table_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    argv = ["--seq-lens", "8,16", "--batch", "1", "--heads", "1", "--head-dim", "4"]
    assert main([*argv, "--repeats", "1", "--warmup", "0", "--json", str(out)]) == 0
    assert "raw SDPA" in capsys.readouterr().out
    assert set(json.loads(out.read_text())["results"]) == {"8", "16"}
