"""Benchmark the Trainer against a bare PyTorch loop (see :mod:`attnmtl.bench.trainer`).

Usage: ``python benchmarks/trainer.py [-c CONFIG] [--rounds 3] [--json FILE] [key=value ...]``
(the same as ``attnmtl bench trainer``).
"""

import sys

from attnmtl.cli import main

if __name__ == "__main__":
    main(["bench", "trainer", *sys.argv[1:]])
