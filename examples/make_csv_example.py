"""Write the example CSV shipped as ``attnmtl/configs/data/wine_mt.csv`` from sklearn's wine.

The wine recognition data (UCI; 178 wines from three Italian cultivars, 13 chemical
measurements) ships inside scikit-learn (``load_wine``, no download). Three tasks of different
kinds are made from it, their source columns removed from the inputs:

* ``cultivar`` (multiclass, 3): the cultivar, written as its name (``class_0`` ... ``class_2``).
* ``intense_color`` (binary): colour intensity above the median, written 0/1.
* ``alcohol`` (regression): the alcohol content (% vol).

30% of each task's labels (53 of 178) are blanked at random (seeded), never all three of one
row, so the file exercises the ``files`` data set's missing-label masks. Re-running the script
rewrites the same bytes.

Usage: ``python examples/make_csv_example.py [--out PATH] [--seed N]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src/attnmtl/configs/data/wine_mt.csv"
INPUTS = (
    "malic_acid",
    "ash",
    "alcalinity_of_ash",
    "magnesium",
    "total_phenols",
    "flavanoids",
    "nonflavanoid_phenols",
    "proanthocyanins",
    "hue",
    "od280_od315",
    "proline",
)
TASKS = ("cultivar", "intense_color", "alcohol")


def make_table(blank: float = 0.3, seed: int = 0) -> pd.DataFrame:
    """The wine inputs and three task columns, ``blank`` of each task's labels left empty."""
    from sklearn.datasets import load_wine

    wine = load_wine(as_frame=True)
    frame = wine.frame.rename(columns={"od280/od315_of_diluted_wines": "od280_od315"})
    color = frame["color_intensity"]
    table = frame[list(INPUTS)].copy()
    table["cultivar"] = pd.Series(wine.target_names[frame["target"]], dtype=object)
    table["intense_color"] = (color > color.median()).astype("Int64")
    table["alcohol"] = frame["alcohol"]
    rng = np.random.default_rng(seed)
    empty = np.zeros((len(table), len(TASKS)), dtype=bool)  # (N, K)
    for k in range(len(TASKS)):  # a row keeps at least one label
        allowed = np.flatnonzero(empty.sum(1) < len(TASKS) - 1)
        empty[rng.choice(allowed, round(blank * len(table)), replace=False), k] = True
    for k, task in enumerate(TASKS):
        table[task] = table[task].mask(pd.Series(empty[:, k], index=table.index))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    table = make_table(seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False, lineterminator="\n")
    missing = ", ".join(f"{t} {table[t].isna().mean():.0%}" for t in TASKS)
    print(
        f"wrote {args.out} ({len(table)} rows, {args.out.stat().st_size} bytes); "
        f"unlabelled: {missing}"
    )


if __name__ == "__main__":
    main()
