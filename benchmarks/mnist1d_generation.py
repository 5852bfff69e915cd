"""Time MNIST-1D generation: the ``mnist1d`` package's ``make_dataset`` against ours.

Usage: ``python benchmarks/mnist1d_generation.py [--samples 5000] [--repeats 5]``

The package transforms one sample at a time in Python; ``attnmtl.data.mnist1d_mt`` transforms
all samples at once with numpy. Both run in this process, interleaved (package, ours, package,
...) so that machine load hits them alike; each reports the median over the repeats. "ours
(generator)" is :func:`generate_mnist1d` plus the shuffle and normalisation ``make_dataset``
also does; "ours (builder)" is the whole ``mnist1d-mt`` builder with all five tasks (torch
tensors, splits, labels, checks).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from mnist1d.data import get_dataset_args, make_dataset

from attnmtl.data.mnist1d_mt import TASK_NAMES, generate_mnist1d, mnist1d_mt


def package(samples: int) -> None:
    """The package's ``make_dataset`` with default arguments and ``samples`` samples."""
    args = get_dataset_args()
    args.num_samples = samples
    make_dataset(args)


def generator(samples: int) -> None:
    """Our vectorised generator, shuffled and normalised as ``make_dataset`` does."""
    rng = np.random.default_rng(42)
    x, _ = generate_mnist1d(np.repeat(np.arange(10), samples // 10), rng)
    x = x[rng.permutation(len(x))]
    (x - x.mean()) / x.std()


def builder(samples: int) -> None:
    """The full ``mnist1d-mt`` builder, 80/20 train/test like the package."""
    train = samples * 4 // 5
    mnist1d_mt(num_train=train, num_val=0, num_test=samples - train, tasks=TASK_NAMES)


def main() -> int:
    """Run the benchmark and print samples/s and speed-ups."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    opts = parser.parse_args()
    runs: dict[str, Callable[[int], None]] = {
        "mnist1d make_dataset": package,
        "ours (generator)": generator,
        "ours (builder)": builder,
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(opts.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run(opts.samples)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["mnist1d make_dataset"])
    print(f"{opts.samples} samples, median of {opts.repeats} interleaved repeats")
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"{name:22s} {median * 1e3:9.1f} ms  {opts.samples / median:11.0f} samples/s"
            f"  x{base / median:7.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
