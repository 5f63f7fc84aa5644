"""Benchmarks of gdopt against its peers (optax, torch.optim); run ``python -m benchmarks.NAME``.

Each script prints a table and writes JSON + Markdown (and a PNG where useful) under
``benchmarks/results/``, with the machine, the library versions, medians and spread. They are
not part of the test suite.
"""
