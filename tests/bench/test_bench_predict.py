"""attnmtl bench predict: both sides time the same rows; the result holds their medians and
ratio, and the CLI prints the table."""

import json

from attnmtl.bench import predict as bench


def test_bench_predict_tiny(tmp_path):
    results = bench.run(rows=3000, rounds=2, batch_size=512, log=lambda _: None)
    assert results["rows"] == 3000 and set(results["samples_per_s"]) == {"predict", "bare"}
    assert all(len(v) == 2 for v in results["all_samples_per_s"].values())
    assert (
        results["ratio"] == results["samples_per_s"]["predict"] / results["samples_per_s"]["bare"]
    )
    assert results["end_to_end_s"] > 0
    json.dumps(results)  # what --json writes


def test_rows_are_the_wine_inputs_tiled_with_small_noise():
    class Run:  # what rows_of reads of a run
        class config:
            class data:
                @staticmethod
                def options():
                    return {"inputs": ["ash", "hue"]}

    frame = bench.rows_of(Run, 400)
    assert list(frame.columns) == ["ash", "hue"] and len(frame) == 400
    assert frame["ash"].between(1.0, 4.0).all()  # the wine's ash stays in range
