"""Benchmarks: programs, never timed assertions. `make bench` runs benchmarks.run."""
