"""Benchmark ``predict`` against a bare loop calling the model (see :mod:`attnmtl.bench.predict`).

Usage: ``python benchmarks/predict.py [--run RUN_DIR] [--rows 100000] [--rounds 5] [--json FILE]``
(the same as ``attnmtl bench predict``).
"""

import sys

from attnmtl.cli import main

if __name__ == "__main__":
    main(["bench", "predict", *sys.argv[1:]])
