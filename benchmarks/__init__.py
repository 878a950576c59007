"""Benchmarks for canvas-stream (not tests): ``python -m benchmarks.run --quick``."""
