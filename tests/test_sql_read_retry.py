"""Reads sent on the driver (:mod:`tyler_sql.driverfetch`) on a connection the pool lent without
its ping: one a read or a fast save returned moments ago and that its driver knows open
(:func:`tyler_sql.engine.trusting_checkout`). Should the server have closed it unseen, the read
is sent once more on a pinged or new connection and succeeds; the dead one is discarded. A
server's error is never sent again.

The servers are real: a connection is killed from a second one (``pg_terminate_backend``,
``KILL``), on an event loop of its own in another thread, so that the store's loop has not seen
the socket close, or has (it then pings and replaces the connection instead)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.test_sql import dialect_url, drop_namespaces
from tyler_core.errors import BackendError
from tyler_core.models import Message, Thread
from tyler_core.store import ThreadStore
from tyler_core.testing.base import fresh_namespace
from tyler_sql import driverfetch, engine
from tyler_sql.backend import SQLBackend
from tyler_sql.driverfetch import DriverFetch
from tyler_sql.engine import Trust, sqlalchemy_url

SERVERS = ["postgres_asyncpg", "mariadb"]


@pytest.fixture(params=SERVERS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A server whose pool pings, through a driver the reads are sent on."""
    return dialect_url(request.param, tmp_path)


@contextlib.asynccontextmanager
async def one_connection_store(url: str) -> AsyncIterator[ThreadStore]:
    """A store on a fresh namespace with a pool of one connection (every read reuses the one
    the last returned), and a thread ``"t"`` saved by another store, so that only reads ever
    returned the connection."""
    namespace = fresh_namespace()
    writer = await ThreadStore.create(url, namespace=namespace)
    reader = await ThreadStore.create(url, namespace=namespace, pool_size=1, max_overflow=0)
    try:
        await writer.save(Thread(id="t", messages=[Message(role="user", content="hello")]))
        yield reader
    finally:
        await reader.close()
        await writer.close()
        await drop_namespaces(url, [namespace])


def _fetch(store: ThreadStore) -> DriverFetch:
    backend = store.backend
    assert isinstance(backend, SQLBackend)
    fetch = backend._pages._fetch
    assert fetch is not None
    return fetch


@contextlib.contextmanager
def sent(store: ThreadStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Within it, the statements the store's reads send on the driver, as they go to it."""
    fetch = _fetch(store)
    run = fetch._run
    statements: list[str] = []

    async def counted(driver: Any, sql: str, arguments: list[Any]) -> Any:
        statements.append(sql)
        return await run(driver, sql, arguments)

    with monkeypatch.context() as patched:
        patched.setattr(fetch, "_run", counted)
        yield statements


@contextlib.contextmanager
def trusts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Trust]]:
    """Within it, what the pool did at each checkout of a read: skipped its ping or not."""
    seen: list[Trust] = []
    checkout = engine.trusting_checkout

    @contextlib.contextmanager
    def recorded() -> Iterator[Trust]:
        with checkout() as trust:
            seen.append(trust)
            yield trust

    with monkeypatch.context() as patched:
        patched.setattr(driverfetch, "trusting_checkout", recorded)
        yield seen


@contextlib.contextmanager
def invalidations(store: ThreadStore) -> Iterator[list[Any]]:
    """Within it, the errors of each pooled connection invalidated (one event each)."""
    errors: list[Any] = []

    def record(dbapi_connection: Any, record: Any, error: Any) -> None:
        errors.append(error)

    event.listen(store.engine.sync_engine, "invalidate", record)
    try:
        yield errors
    finally:
        event.remove(store.engine.sync_engine, "invalidate", record)


def _on_server(url: str, sql: str) -> Any:
    """``sql``'s first value, sent on a connection of its own by an event loop of its own in
    another thread, while this thread (and its event loop) waits."""
    found: list[Any] = []

    async def run() -> None:
        other = create_async_engine(sqlalchemy_url(url), poolclass=NullPool)
        try:
            async with other.connect() as connection:
                result = await connection.execute(text(sql))
                found.append(result.scalar() if result.returns_rows else None)
        finally:
            await other.dispose()

    thread = threading.Thread(target=asyncio.run, args=(run(),))
    thread.start()
    thread.join()
    assert found, "the statement failed (see the thread's traceback)"
    return found[0]


def _postgres(url: str) -> bool:
    return url.startswith("postgresql")


async def _server_id(store: ThreadStore) -> int:
    """The server's id of the store's (one) pooled connection."""
    postgres = store.engine.dialect.name == "postgresql"
    query = "SELECT pg_backend_pid()" if postgres else "SELECT CONNECTION_ID()"
    async with store.engine.connect() as connection:
        return int(await connection.scalar(text(query)))


def _kill(url: str, server_id: int) -> None:
    if _postgres(url):
        # Waits (up to 5 s) for the connection to be gone.
        assert _on_server(url, f"SELECT pg_terminate_backend({server_id}, 5000)") is True
    else:
        _on_server(url, f"KILL CONNECTION {server_id}")
    time.sleep(0.3)  # blocking: the socket's end reaches this process, unseen by its loop


def _alive(url: str, server_id: int) -> bool:
    table = "pg_stat_activity WHERE pid" if _postgres(url) else "information_schema.PROCESSLIST"
    column = "" if _postgres(url) else " WHERE ID"
    return bool(_on_server(url, f"SELECT COUNT(*) FROM {table}{column} = {server_id}"))


async def test_reads_lend_a_connection_a_read_returned_moments_ago_without_the_ping(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with one_connection_store(url) as store:
        with trusts(monkeypatch) as seen:
            await store.get("t")  # a new connection: nothing to ping
            await store.list_recent(10)
            await store.get("t")
            monkeypatch.setattr(engine, "_TRUSTED_IDLE", 0.0)  # returned too long ago
            got = await store.get("t")
        assert [trust.skipped for trust in seen] == [False, True, True, False]
        assert got is not None and got.messages[0].content == "hello"


async def test_a_read_on_a_connection_the_server_killed_unseen_is_sent_again_on_a_new_one(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with one_connection_store(url) as store:
        assert await store.get("t") is not None
        killed = await _server_id(store)
        await store.get("t")  # returned by a read just now: trusted
        _kill(url, killed)
        with (
            trusts(monkeypatch) as seen,
            sent(store, monkeypatch) as statements,
            invalidations(store) as invalidated,
        ):
            got = await store.get("t")
        assert got is not None and got.messages[0].content == "hello"
        assert [trust.skipped for trust in seen] == [True]  # lent without the ping
        assert len(statements) == 2  # the one that failed, and the same once more
        assert statements[0] == statements[1]
        assert len(invalidated) == 1  # the dead connection, never back in the pool
        assert _on_server(url, "SELECT 1") == 1
        replacement = await _server_id(store)
        assert replacement != killed
        assert not _alive(url, killed)
        with sent(store, monkeypatch) as statements:
            assert [t.id for t in await store.list_recent()] == ["t"]
        assert len(statements) == 1


async def test_a_connection_the_server_killed_and_the_loop_saw_closed_is_pinged_instead(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with one_connection_store(url) as store:
        killed = await _server_id(store)
        await store.get("t")
        _kill(url, killed)
        await asyncio.sleep(0.3)  # the loop sees the socket's end: the driver knows it closed
        with trusts(monkeypatch) as seen, sent(store, monkeypatch) as statements:
            got = await store.get("t")
        assert got is not None and got.messages[0].content == "hello"
        assert [trust.skipped for trust in seen] == [False]  # pinged, found dead, replaced
        assert len(statements) == 1
        assert await _server_id(store) != killed


async def test_a_server_error_on_a_connection_lent_without_the_ping_is_not_sent_again(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with one_connection_store(url) as store:
        await store.get("t")
        kept = await _server_id(store)
        await store.get("t")
        fetch = _fetch(store)
        run = fetch._run
        calls: list[str] = []

        async def refused(driver: Any, sql: str, arguments: list[Any]) -> Any:
            calls.append(sql)
            return await run(driver, "SELECT * FROM no_such_table_here", [])

        monkeypatch.setattr(fetch, "_run", refused)
        with (
            trusts(monkeypatch) as seen,
            invalidations(store) as invalidated,
            pytest.raises(BackendError, match="no_such_table_here"),
        ):
            await store.get("t")
        monkeypatch.setattr(fetch, "_run", run)
        assert [trust.skipped for trust in seen] == [True]  # lent without the ping
        assert len(calls) == 1  # a server's error: never sent again
        assert invalidated == []  # the connection stays usable, and in the pool
        assert await _server_id(store) == kept
        assert await store.get("t") is not None
