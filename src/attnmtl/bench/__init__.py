"""Benchmarks of attnmtl modules against reference implementations (see :mod:`.attention`)."""
