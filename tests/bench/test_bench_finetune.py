"""``attnmtl bench finetune`` on the tiny BERT of conftest.py: every variant is timed and
trains what its name says."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnmtl.bench.finetune import VARIANTS, render, run
from attnmtl.cli import main


def test_every_variant_is_timed_with_its_trainable_parameters(tiny_bert: Path) -> None:
    results = run(str(tiny_bert), batch_size=4, seq_len=8, steps=1, rounds=2, log=lambda _: None)
    assert list(results["samples_per_s"]) == list(VARIANTS)
    assert all(len(v) == 2 and min(v) > 0 for v in results["all_samples_per_s"].values())
    assert results["ratio_to_full"]["full"] == 1.0
    trained = results["trainable"]
    assert trained["lora"] < trained["last2"] < trained["full"] == trained["full+checkpointing"]
    assert "lora" in str(render(results).columns[0]._cells)


def test_an_unknown_variant_is_one_line_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["bench", "finetune", "--variants", "full,prefix"])
    err = capsys.readouterr().err
    assert done.value.code == 2
    assert (
        err
        == "attnmtl: error: --variants: 'prefix'; expected any of: " + ", ".join(VARIANTS) + "\n"
    )
