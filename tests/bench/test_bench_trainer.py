"""The trainer benchmark runs both loops on the same model and reports their ratio."""

from attnmtl.bench.trainer import render, run


def test_bench_trainer_reports_both_loops_and_their_ratio():
    overrides = [
        "data.num_train=128",
        "data.num_val=32",
        "data.num_test=32",
        "model.encoder_options={cell: gru, hidden_dim: 8}",
        "train.tensorboard=false",
    ]
    results = run("default", overrides, rounds=1, log=lambda _: None)
    assert results["samples"] == 128
    assert len(results["rounds"]["trainer"]) == len(results["rounds"]["bare"]) == 1
    assert results["ratio"] == results["trainer_samples_per_s"] / results["bare_samples_per_s"]
    assert results["trainer_samples_per_s"] > 0 and results["bare_samples_per_s"] > 0
    assert render(results).row_count == 2
