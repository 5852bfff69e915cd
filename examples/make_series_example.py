"""Write the time-series example shipped as ``attnmtl/configs/data/series_mt.csv``.

Two daily series, stored the way such files usually come: one row per sliding window, each
series as a block of columns (``a_t00 … a_t15``, ``b_t00 … b_t15``, oldest first), an ``id`` and a
``date`` column, a ``split`` column (``train`` before a date, ``test`` after) and three tasks
about the step after the window:

* ``up`` (binary): whether ``a`` rises at the next step;
* ``weekday`` (multiclass, 7): the weekday of the next step, readable only from the weekly
  pattern of ``a`` (the date is an identifier, not an input);
* ``next`` (regression): the next value of ``a``.

``a`` is a random walk with drift (its level in the test period lies above almost every
training value: the level shift that defeats a model of globally standardised windows), plus a
weekly pattern and noise; each step of its level follows ``b``, an AR(1) driver, through a
saturating response (``tanh``), which a linear model only approximates. Re-running the
script rewrites the same bytes.

Usage: ``python examples/make_series_example.py [--out PATH] [--rows N] [--steps T] [--seed N]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src/attnmtl/configs/data/series_mt.csv"
WEEK = np.array([0.0, 0.6, 1.0, 0.4, -0.3, -1.0, -0.7])  # the weekly pattern of a


def make_series(rows: int = 800, steps: int = 16, seed: int = 0, test: float = 0.25):
    """The windows table: ``rows`` windows of ``steps`` steps, the last ``test`` share test."""
    rng = np.random.default_rng(seed)
    length = rows + steps
    day = np.arange(length)
    b = np.zeros(length)  # a driver: an AR(1) series
    for t in range(1, length):
        b[t] = 0.7 * b[t - 1] + 0.3 * rng.normal()
    # a's level drifts up, pushed by b through a saturating (not linear) response
    steps_up = 0.08 + 0.5 * np.tanh(8 * b) + 0.15 * rng.normal(size=length)
    level = np.concatenate([[0.0], np.cumsum(steps_up[:-1])])
    a = level + WEEK[day % 7] + 0.1 * rng.normal(size=length)
    start = np.datetime64("2023-01-02")  # a Monday
    table: dict[str, object] = {
        "id": np.arange(rows),
        "date": [str(start + int(i) + steps) for i in range(rows)],  # the predicted day
    }
    windows = np.arange(rows)[:, None] + np.arange(steps)  # (N, T) positions
    for name, series in (("a", a), ("b", b)):
        for t in range(steps):
            table[f"{name}_t{t:02d}"] = np.round(series[windows[:, t]], 3)
    after = np.arange(rows) + steps  # the step after each window
    table["up"] = (a[after] > a[after - 1]).astype(int)
    table["weekday"] = day[after] % 7
    table["next"] = np.round(a[after], 3)
    table["split"] = np.where(np.arange(rows) < round((1 - test) * rows), "train", "test")
    return pd.DataFrame(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--rows", type=int, default=800)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    make_series(args.rows, args.steps, args.seed).to_csv(args.out, index=False)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
