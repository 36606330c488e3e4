"""The tyler-threadstore benchmark suite: ``python -m benchmarks [--backend NAME ...] [--quick]``.

Every workload runs against the store and against a raw-driver baseline that does the minimal
equivalent work on the same server, interleaved in the same run (see ``docs/performance.md``).
Nothing here is imported by the library, and numbers are never asserted in tests.
"""
