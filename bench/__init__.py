"""Benchmarks of the real request paths: `python bench/run.py` (see run.py)."""
