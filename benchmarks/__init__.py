"""Benchmarks a user can run: ``python benchmarks/run.py`` (see benchmarks/README.md)."""
