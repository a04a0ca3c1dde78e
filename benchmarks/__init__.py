"""Benchmarks for the quality bars of DESIGN.md; run with ``python -m benchmarks``."""
