"""Shared fixtures of the battery: one ``open_store`` factory parametrized over every backend,
and a results file the battery's figures are written to (``docs/reliability.md`` quotes it)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.services import service_url
from tyler_core.store import ThreadStore
from tyler_core.testing.base import fresh_namespace

#: Every backend the battery runs on, by the name of its test service (or ``memory``, ``sqlite``).
BACKENDS = ["memory", "sqlite", "postgres", "mariadb", "redis", "redis_cluster", "mongodb"]

#: Where the figures of the last run go; the battery rewrites the entries it produced.
RESULTS = Path(os.environ.get("TYLER_RELIABILITY_RESULTS", "/tmp/tyler-reliability-results.json"))


def backend_url(name: str, tmp_path: Path) -> str:
    """The URL of backend ``name`` (skips, or fails under TYLER_TEST_REQUIRE_ALL=1, if its server
    does not answer). ``memory://NAME`` is shared within the process, like a server."""
    if name == "memory":
        return f"memory://{tmp_path.name}"
    if name == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'threads.db'}"
    service = "mysql" if name == "mariadb" else name
    return service_url(service)


class OpenStore(Protocol):
    """Opens a store on the test's backend (fresh namespace unless given); closed and dropped
    when the test ends."""

    url: str

    async def __call__(self, namespace: str | None = None, **options: Any) -> ThreadStore: ...


class _Opener:
    def __init__(self, url: str) -> None:
        self.url = url
        self.stores: list[ThreadStore] = []
        self.namespaces: set[str] = set()

    async def __call__(self, namespace: str | None = None, **options: Any) -> ThreadStore:
        namespace = namespace or fresh_namespace()
        self.namespaces.add(namespace)
        store = await ThreadStore.create(self.url, namespace=namespace, **options)
        self.stores.append(store)
        return store

    async def cleanup(self) -> None:
        dropped: set[str] = set()
        for store in reversed(self.stores):
            try:
                namespace = store.options.namespace
                if namespace not in dropped:
                    dropped.add(namespace)
                    # A store whose server was killed may not answer: a fresh one drops.
                    cleaner = await ThreadStore.create(self.url, namespace=namespace)
                    try:
                        await cleaner.backend.drop()
                    finally:
                        await cleaner.close()
            finally:
                await store.close()
        if self.url.startswith("mongodb"):
            await drop_mongo_collections(self.url, sorted(self.namespaces))


async def drop_mongo_collections(url: str, namespaces: list[str]) -> None:
    """``purge`` only empties a Mongo namespace's collections: drop them too."""
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    try:
        database = client.get_default_database("tyler")
        for namespace in namespaces:
            for kind in ("threads", "messages"):
                await database.drop_collection(f"{namespace}_{kind}")
    finally:
        await client.close()


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    """The name of the backend a test runs on."""
    return str(request.param)


@pytest.fixture
async def open_store(backend_name: str, tmp_path: Path) -> AsyncIterator[OpenStore]:
    """Opens stores on the test's backend; drops their namespaces and closes them afterwards."""
    opener = _Opener(backend_url(backend_name, tmp_path))
    yield opener
    await opener.cleanup()


def record(section: str, key: str, figures: dict[str, Any]) -> None:
    """Store figures of this run under ``section``/``key`` in the results file."""
    try:
        results: dict[str, Any] = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        results = {}
    results.setdefault(section, {})[key] = figures
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


@pytest.fixture
def results() -> Any:
    """The :func:`record` function, as a fixture for tests that report figures."""
    return record
