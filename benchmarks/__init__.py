"""Benchmarks: scripts that print Markdown tables; `python -m benchmarks` runs them all into BENCHMARKS.md."""
