"""Benchmarks of the engine (not tests): JSON results, the same workloads every run."""
