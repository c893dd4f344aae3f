"""Helpers for the tests and the benchmarks, kept apart from the parts of the method.

- :mod:`.synthetic_features`: seeded re-ID-like feature sets with known clusters (clustering tests
  and benchmarks);
- :mod:`.memory_reference`: the memory step written as a per-sample loop, the oracle the
  vectorised memories are tested and timed against.

Nothing in training imports this package; import its modules directly.
"""
