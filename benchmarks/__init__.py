"""Benchmarks: `python -m benchmarks.<name> [--quick]` from the repository root."""
