"""Benchmarks: each module exposes run(...) -> dict and prints a `BENCH <name> {json}` line."""
