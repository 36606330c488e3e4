"""The conformance suite: every rule of the ThreadStore contract, for any backend.

Run it against a store URL with no test file of your own::

    pytest --pyargs tyler_core.testing --tyler-url "mydb://localhost/test"

or subclass :class:`ThreadStoreConformance` in your tests::

    from tyler_core.testing import ThreadStoreConformance

    class TestMyStore(ThreadStoreConformance):
        url = "mydb://localhost/test"          # or override open_store()
        expected_failures = {"test_some_rule": "known bug, issue #12"}

Each test opens its stores on a fresh namespace and purges them afterwards; tests of a
capability the backend does not declare are skipped; ``expected_failures`` become strict
expected failures. It needs the ``testing`` extra (pytest, pytest-asyncio, hypothesis).
"""

from __future__ import annotations

try:
    import hypothesis  # noqa: F401
    import pytest  # noqa: F401
    import pytest_asyncio  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"tyler_core.testing needs {exc.name or 'pytest, pytest-asyncio and hypothesis'}: "
        'pip install "tyler-threadstore[testing]"'
    ) from exc

from tyler_core.testing.base import requires
from tyler_core.testing.capabilities import CapabilityTests
from tyler_core.testing.clock import ManualClock
from tyler_core.testing.concurrency import ConcurrencyTests
from tyler_core.testing.queries import QueryTests
from tyler_core.testing.roundtrip import RoundTripTests
from tyler_core.testing.stateful import StatefulTests
from tyler_core.testing.versions import VersionTests

__all__ = ["ManualClock", "ThreadStoreConformance", "requires"]


class ThreadStoreConformance(
    RoundTripTests,
    VersionTests,
    QueryTests,
    ConcurrencyTests,
    CapabilityTests,
    StatefulTests,
):
    """The whole contract as tests. Subclass it once per backend (the name must start with
    ``Test`` for pytest to collect it).

    Class attributes:
        url: the store URL; else each ``--tyler-url`` given to pytest.
        store_options: extra keywords for ``ThreadStore.create``.
        expected_failures: test name -> reason; those tests become strict expected failures.
        stateful_examples, stateful_steps: size of the Hypothesis stateful test;
            stateful_shrink: shrink a failing sequence to a minimal one (slow).
        concurrency: tasks in the concurrency tests; deadlock_timeout: seconds they may take.
        ttl_seconds, ttl_wait: the ttl the TTL tests use, and how long they wait for expiry.

    Override ``async def open_store(self, namespace, *, clock=None) -> ThreadStore`` to open
    your backend your way (the suite passes a fresh namespace and, mostly, a
    :class:`ManualClock`).
    """
