"""The suite's foundation: configuration, fixtures, capability gating and comparison helpers.

Every test mixin derives from :class:`ConformanceBase`; :class:`ThreadStoreConformance` combines
them. Nothing here knows any backend: differences between backends are capabilities.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar, TypeVar

import pytest
import pytest_asyncio
from pydantic import BaseModel

from tyler_core.backend import Capabilities
from tyler_core.models import Thread
from tyler_core.pytest_plugin import configured_urls
from tyler_core.store import Clock, ThreadStore
from tyler_core.testing.clock import ManualClock
from tyler_core.urls import mask_url

__all__ = [
    "ConformanceBase",
    "StoreOpener",
    "exact",
    "fresh_namespace",
    "options_of",
    "requires",
    "stored_form",
]

F = TypeVar("F", bound=Callable[..., Any])

_REQUIRES = "__tyler_requires__"
NO_URL_REASON = (
    "no store URL: pass --tyler-url URL, set `url` on the ThreadStoreConformance subclass, "
    "or override its open_store()"
)


def requires(*capabilities: str) -> Callable[[F], F]:
    """Run the decorated test only on backends that declare every named capability.

    The names are checked when the suite is imported (a typo fails loudly instead of skipping
    forever); on a backend without them the test skips with
    ``backend does not declare capability: NAME``.
    """
    known = Capabilities.names()
    unknown = [name for name in capabilities if name not in known]
    if unknown or not capabilities:
        raise ValueError(f"unknown capabilities {unknown}; the known ones are {list(known)}")

    def decorate(test: F) -> F:
        already: frozenset[str] = getattr(test, _REQUIRES, frozenset())
        setattr(test, _REQUIRES, already | frozenset(capabilities))
        return test

    return decorate


def fresh_namespace() -> str:
    """A namespace no other test uses (``[a-z0-9_]``, 22 characters)."""
    return "t_" + uuid.uuid4().hex[:20]


def exact(value: Any) -> Any:
    """A comparable form of a model or JSON value in which nothing is equal by accident.

    Python says ``1 == 1.0 == True`` and compares datetimes as instants; stores must keep the
    types and the UTC offset, so scalars are tagged with their type and datetimes become ISO
    text. Dicts stay dicts (key order is not part of the contract) and lists stay lists.
    """
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", repr(value))
    if isinstance(value, datetime | date):
        return ("datetime", value.isoformat())
    if isinstance(value, dict):
        return {key: exact(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [exact(item) for item in value]
    return (type(value).__name__, repr(value))


def stored_form(thread: Thread) -> Any:
    """What ``get`` must return for ``thread`` as saved: :func:`exact` of it without its system
    messages."""
    dump = thread.model_dump()
    dump["messages"] = [m for m in dump["messages"] if m["role"] != "system"]
    return exact(dump)


# -- the base class ------------------------------------------------------------------------------


class StoreOpener:
    """Opens stores for one test and purges and closes all of them when it ends."""

    def __init__(self, suite: ConformanceBase) -> None:
        self._suite = suite
        self.opened: list[ThreadStore] = []

    async def __call__(
        self, namespace: str | None = None, *, clock: Clock | None = None
    ) -> ThreadStore:
        """A store from the suite's :meth:`~ConformanceBase.open_store` (fresh namespace by
        default), cleaned up after the test."""
        store = await self._suite.open_store(namespace or fresh_namespace(), clock=clock)
        self.opened.append(store)
        return store

    async def reopen(self, store: ThreadStore, **overrides: Any) -> ThreadStore:
        """Another store on ``store``'s URL and options, with ``overrides`` (``ttl=...``), cleaned
        up after the test. Works whatever ``open_store`` does, since it reads the options back."""
        reopened = await ThreadStore.create(
            store.database_url, **{**options_of(store), **overrides}
        )
        self.opened.append(reopened)
        return reopened

    async def cleanup(self) -> None:
        """Purge every store opened, drop their namespaces, close them."""
        errors: list[BaseException] = []
        for store in reversed(self.opened):
            try:
                await store.backend.purge()
            except Exception as exc:
                errors.append(exc)
        # The namespaces were made for this test: leave no tables behind on a server.
        last_per_namespace = {store.options.namespace: store for store in self.opened}
        for store in last_per_namespace.values():
            try:
                await store.backend.drop()
            except Exception as exc:
                errors.append(exc)
        for store in reversed(self.opened):
            try:
                await store.close()
            except Exception as exc:
                errors.append(exc)
        self.opened.clear()
        if errors:
            raise errors[0]


def options_of(store: ThreadStore) -> dict[str, Any]:
    """The keyword options that open another store like ``store``."""
    options = store.options
    return {
        "namespace": options.namespace,
        "ttl": options.ttl,
        "connect_timeout": options.connect_timeout,
        "pool_size": options.pool_size,
        "max_overflow": options.max_overflow,
        "pool_timeout": options.pool_timeout,
        "pool_recycle": options.pool_recycle,
        "transactions": options.transactions,
        **options.extra,
    }


class ConformanceBase:
    """Configuration, fixtures and helpers shared by every test mixin of the suite."""

    #: The store URL; else ``--tyler-url`` (repeatable: the suite runs once per URL).
    url: ClassVar[str | None] = None
    #: Extra keywords for :meth:`ThreadStore.create` in the default :meth:`open_store`.
    store_options: ClassVar[Mapping[str, Any]] = {}
    #: Known bugs: test name -> reason. Such tests are strict expected failures, so one that
    #: starts passing fails the run (remove it from here then).
    expected_failures: ClassVar[Mapping[str, str]] = {}
    #: Hypothesis examples (operation sequences) of the stateful test, and steps in each.
    stateful_examples: ClassVar[int] = 15
    stateful_steps: ClassVar[int] = 20
    #: Shrink a failing sequence to a minimal one (clearer, but can take minutes).
    stateful_shrink: ClassVar[bool] = False
    #: Tasks in the concurrency tests.
    concurrency: ClassVar[int] = 20
    #: Seconds a concurrency test may take before it counts as a deadlock.
    deadlock_timeout: ClassVar[float] = 60.0
    #: TTL tests: the ttl to use, and how long to wait for a thread to expire.
    ttl_seconds: ClassVar[float] = 1.5
    ttl_wait: ClassVar[float] = 6.0

    _tyler_url: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        unknown = [
            name
            for name in cls.expected_failures
            if not (name.startswith("test") and callable(getattr(cls, name, None)))
        ]
        if unknown:
            raise TypeError(f"{cls.__name__}.expected_failures names no test: {unknown}")

    async def open_store(self, namespace: str, *, clock: Clock | None = None) -> ThreadStore:
        """Open a store on ``namespace``. Override it to open your backend your way.

        Default: ``ThreadStore.create(url, namespace=namespace, clock=clock, **store_options)``
        with the class's ``url`` or the ``--tyler-url`` under test.
        """
        url = self.url if self.url is not None else self._tyler_url
        if url is None:
            pytest.skip(NO_URL_REASON)
        return await ThreadStore.create(
            url, namespace=namespace, clock=clock, **dict(self.store_options)
        )

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Run the suite once per ``--tyler-url`` unless the class pins ``url`` or overrides
        ``open_store``; skip it (one visible skip per test) when no URL is given at all."""
        if "tyler_url" not in metafunc.fixturenames:
            return
        cls = type(self)
        if cls.url is not None or cls.open_store is not ConformanceBase.open_store:
            return
        urls = configured_urls(metafunc.config)
        if urls:
            params = [pytest.param(url, id=mask_url(url)) for url in urls]
        else:
            params = [pytest.param(None, id="no-url", marks=pytest.mark.skip(reason=NO_URL_REASON))]
        metafunc.parametrize("tyler_url", params)

    # -- fixtures --------------------------------------------------------------------------------

    @pytest.fixture
    def tyler_url(self) -> str | None:
        """The URL under test (parametrized from ``--tyler-url``); ``None`` if the class pins
        ``url`` or overrides ``open_store``."""
        return None

    @pytest.fixture(autouse=True)
    def _tyler_known_bugs(self, request: pytest.FixtureRequest) -> None:
        reason = self.expected_failures.get(request.function.__name__)
        if reason is not None:
            request.applymarker(pytest.mark.xfail(strict=True, reason=reason))

    @pytest.fixture
    def clock(self) -> ManualClock:
        """The clock of :meth:`store`: 1 ms and 1 µs per call, so microseconds show."""
        start = datetime.now(UTC).replace(microsecond=654321)
        return ManualClock(start, step=timedelta(milliseconds=1, microseconds=1))

    @pytest.fixture
    def namespace(self) -> str:
        """A fresh namespace for this test."""
        return fresh_namespace()

    @pytest_asyncio.fixture(loop_scope="function")
    async def opener(self, tyler_url: str | None) -> AsyncIterator[StoreOpener]:
        """Opens stores for this test; purges and closes them afterwards, pass, fail or skip."""
        self._tyler_url = tyler_url
        opener = StoreOpener(self)
        try:
            yield opener
        finally:
            await opener.cleanup()

    @pytest_asyncio.fixture(loop_scope="function")
    async def store(
        self,
        request: pytest.FixtureRequest,
        opener: StoreOpener,
        namespace: str,
        clock: ManualClock,
    ) -> ThreadStore:
        """The store under test, on a fresh namespace with the :meth:`clock`. Skips the test
        when the backend lacks a capability the test ``requires``."""
        store = await opener(namespace, clock=clock)
        needed: frozenset[str] = getattr(request.function, _REQUIRES, frozenset())
        for name in sorted(needed):
            if not getattr(store.capabilities, name):
                pytest.skip(f"backend does not declare capability: {name}")
        return store

    @pytest_asyncio.fixture(loop_scope="function")
    async def second_store(
        self, store: ThreadStore, opener: StoreOpener, namespace: str, clock: ManualClock
    ) -> ThreadStore:
        """A second instance on the same namespace (``shared_across_instances`` only)."""
        if not store.capabilities.shared_across_instances:
            pytest.skip("backend does not declare capability: shared_across_instances")
        return await opener(namespace, clock=clock)

    @pytest_asyncio.fixture(loop_scope="function")
    async def other_store(
        self, store: ThreadStore, opener: StoreOpener, clock: ManualClock
    ) -> ThreadStore:
        """A store on another namespace of the same backend."""
        return await opener(fresh_namespace(), clock=clock)

    # -- helpers ---------------------------------------------------------------------------------

    @staticmethod
    async def saved(store: ThreadStore, *threads: Thread) -> list[Thread]:
        """Save each thread in turn; return them."""
        for thread in threads:
            await store.save(thread)
        return list(threads)

    @staticmethod
    async def must_get(store: ThreadStore, thread_id: str) -> Thread:
        """The stored thread, failing the test if it is missing."""
        thread = await store.get(thread_id)
        assert thread is not None, f"thread {thread_id!r} is missing"
        return thread

    @staticmethod
    def ids(threads: list[Thread]) -> list[str]:
        """The ids of ``threads``, in order."""
        return [t.id for t in threads]
