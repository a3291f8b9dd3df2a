"""Benchmark the deployment on this machine, side by side in one run, and write a report with targets
(docs/benchmark.md): ``python -m scripts.bench.benchmark``; ``cli`` says what each section measures.

Modules: ``harness`` (what every section uses; its crowd of clients in ``crowd``), one per section
(``inprocess``, ``stock``, ``video``, ``faces``, ``analysts``, ``packing``, ...), ``report`` (targets, checks,
the markdown), ``cli`` (the run).
"""
