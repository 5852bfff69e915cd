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


def test_both_loops_augment_a_dense_set_alike(monkeypatch):
    """On the scenes recipe with augmentation, the bare loop draws the same augmentation per
    step as the trainer (same generator seeds), so both sides do the same work."""
    from attnmtl.data.dense_sets import SceneAugment

    seeds: list[tuple[int, int]] = []  # (batch size, first draw of the step's generator)
    original = SceneAugment.__call__

    def counted(self, batch, generator):
        seeds.append((len(batch.inputs), int(generator.initial_seed())))
        return original(self, batch, generator)

    monkeypatch.setattr(SceneAugment, "__call__", counted)
    overrides = [
        "data.num_train=16",
        "data.num_val=8",
        "data.num_test=8",
        "data.height=16",
        "data.width=16",
        "data.augment=true",
        "model.widths=[4, 8]",
        "train.batch_size=8",
        "train.tensorboard=false",
        "train.report=false",
    ]
    results = run("scenes", overrides, rounds=1, log=lambda _: None)
    assert results["samples"] == 16
    per_epoch = [seeds[i : i + 2] for i in range(0, len(seeds), 2)]
    assert len(per_epoch) == 4  # warm-up and one round, each side once
    assert all(epoch == per_epoch[0] for epoch in per_epoch)
