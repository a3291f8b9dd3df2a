"""Measuring the served model: ``benchmark`` (docs/benchmark.md) and ``loadtest``."""
