"""Entry point for ``pytest --pyargs tyler_core.testing --tyler-url URL``: the whole suite,
once per URL, with no test file of one's own."""

from __future__ import annotations

from tyler_core.testing import ThreadStoreConformance


class TestConformance(ThreadStoreConformance):
    """The conformance suite against each ``--tyler-url``."""
