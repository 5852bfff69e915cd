"""Benchmark multi-head attention (see :mod:`attnmtl.bench.attention`).

Usage: ``python benchmarks/attention.py [--seq-lens 128,512,2048] [--json FILE] ...``
"""

from attnmtl.bench.attention import main

if __name__ == "__main__":
    raise SystemExit(main())
