"""Benchmarks of auto-healer, run with `make bench` (never as timed tests)."""
