"""Benchmarks for the quality bars of docs/design.md; run with ``python -m benchmarks``."""
