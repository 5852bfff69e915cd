"""Evaluating on shifted data uses the training data's normalisation."""

from attnmtl.run.evaluate import reuse_statistics

INFO = {"input_mean": 0.5, "input_std": 2.0, "scale_mean": 1.0, "scale_std": 0.1}


def test_shifted_data_reuses_the_runs_statistics():
    section = {"name": "mnist1d-mt", "iid_noise_scale": 0.1}
    reuse_statistics(section, INFO)
    assert section["input_stats"] == [0.5, 2.0]
    assert section["scale_stats"] == [1.0, 0.1]


def test_statistics_the_user_gives_or_the_builder_lacks_are_left_alone():
    section = {"name": "mnist1d-mt", "input_stats": [0.0, 1.0]}
    reuse_statistics(section, INFO)
    assert section["input_stats"] == [0.0, 1.0]
    other = {"name": "multidigits"}
    reuse_statistics(other, INFO)  # multidigits takes sum_stats only, and INFO has none
    assert other == {"name": "multidigits"}
