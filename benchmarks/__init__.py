"""Benchmarks of the counter engine and its reference app: ``python -m benchmarks``.

See ``benchmarks/README.md``; results go to ``benchmarks/results/latest.{json,md,png}``.
"""
