"""The conformance suite against the reference memory backend, private and shared."""

from __future__ import annotations

from tyler_core.testing import ThreadStoreConformance


class TestMemory(ThreadStoreConformance):
    """``memory://``: private to each store, so the two-instance tests skip."""

    url = "memory://"


class TestSharedMemory(ThreadStoreConformance):
    """``memory://NAME``: shared by the stores of this process, so two-instance tests run."""

    url = "memory://conformance"
