"""SQL servers killing the store's connections in the middle of saves and appends
(``pg_terminate_backend``, MariaDB's ``KILL``): afterwards the same store works, no connection
leaked from its pool, every thread is one whole version, and every write that returned is
there. Plus the isolation levels the MariaDB write path sets per transaction."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event, text

from tests.reliability.conftest import record
from tests.services import service_url
from tyler_core.errors import BackendError, ConcurrencyError
from tyler_core.models import Message, Thread
from tyler_core.store import ThreadStore
from tyler_core.testing.base import fresh_namespace
from tyler_sql.backend import SQLBackend

SIZE = 40
ROUNDS = 30
_PID = {"postgres": "SELECT pg_backend_pid()", "mariadb": "SELECT CONNECTION_ID()"}
_KILL = {"postgres": "SELECT pg_terminate_backend({})", "mariadb": "KILL {}"}


async def kill_all(admin: ThreadStore, name: str, ids: set[int]) -> int:
    """Kill the server connections ``ids`` (and forget them) through ``admin``; how many."""
    kills = 0
    async with admin.engine.connect() as connection:
        for server_id in sorted(ids):
            try:
                await connection.execute(text(_KILL[name].format(server_id)))
                kills += 1
            except Exception:  # MariaDB: that connection is already gone
                pass
    ids.clear()
    return kills


def _stamp(thread: Thread, round_: int) -> None:
    thread.title = f"round {round_}"
    thread.attributes["round"] = round_
    for number, message in enumerate(m for m in thread.messages if m.id.startswith("m")):
        message.content = f"round {round_} #{number}"


def _round(thread: Thread) -> int:
    """The round a stored thread is at; fails if its parts come from different saves."""
    round_ = int(thread.attributes["round"])
    assert thread.title == f"round {round_}"
    stamped = [m for m in thread.messages if m.id.startswith("m")]
    assert len(stamped) == SIZE
    assert [m.content for m in stamped] == [f"round {round_} #{n}" for n in range(SIZE)]
    sequences = [m.sequence for m in thread.messages]
    assert sequences == sorted(set(sequences))  # type: ignore[type-var]
    return round_


@pytest.fixture(params=["postgres", "mariadb"])
async def victim(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[str, ThreadStore, set[int]]]:
    """A store whose every new connection reports its server-side id into a set."""
    name = str(request.param)
    url = service_url("mysql" if name == "mariadb" else name)
    store = ThreadStore(url, namespace=fresh_namespace())
    ids: set[int] = set()

    def remember(dbapi_connection: Any, _: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(_PID[name])
        ids.add(int(cursor.fetchone()[0]))
        cursor.close()

    event.listen(store.engine.sync_engine, "connect", remember)
    await store.initialize()
    try:
        yield name, store, ids
    finally:
        cleaner = await ThreadStore.create(url, namespace=store.options.namespace)
        await cleaner.backend.drop()
        await cleaner.close()
        await store.close()


@pytest.mark.slow
async def test_killed_connections_leave_old_or_new_threads_and_lose_no_acknowledged_write(
    victim: tuple[str, ThreadStore, set[int]],
) -> None:
    name, store, ids = victim
    admin = ThreadStore(service_url("mysql" if name == "mariadb" else name))
    rng = random.Random(3)
    thread = Thread(id="victim", attributes={"round": 0})
    for number in range(SIZE):
        thread.add_message(Message(id=f"m{number}", role="user", content=""))
    _stamp(thread, 0)
    await store.save(thread)
    await store.save(Thread(id="log"))
    kills = 0
    outcomes = {"saved": 0, "save failed": 0, "appended": 0, "append failed": 0}
    acknowledged: list[str] = []
    previous = 0

    async def kill_soon() -> None:
        nonlocal kills
        if rng.random() < 0.3:
            return  # some rounds go through untouched, so saves also succeed
        await asyncio.sleep(rng.uniform(0, 0.02))
        kills += await kill_all(admin, name, ids)

    try:
        for round_ in range(1, ROUNDS + 1):
            _stamp(thread, round_)
            killer = asyncio.create_task(kill_soon())
            try:
                await store.save(thread)
                outcomes["saved"] += 1
            except (BackendError, ConcurrencyError):
                outcomes["save failed"] += 1
            message_id = f"a{round_}"
            try:
                await store.append("log", Message(id=message_id, role="user", content="x"))
                acknowledged.append(message_id)
                outcomes["appended"] += 1
            except BackendError:
                outcomes["append failed"] += 1
            await killer
            # The same store answers again (a failure here would be the pool keeping a dead
            # connection); what is stored is one whole round, this one or the last stored.
            reloaded = await _get(store, "victim")
            at = _round(reloaded)
            assert at in (previous, round_)
            previous = at
            found = await store.find_by_attributes({"round": at})
            assert [t.id for t in found] == ["victim"]
            thread = reloaded
    finally:
        await admin.close()
    log = await _get(store, "log")
    stored_ids = [m.id for m in log.messages]
    assert len(stored_ids) == len(set(stored_ids))
    lost = [message_id for message_id in acknowledged if message_id not in stored_ids]
    assert lost == []
    # Nothing is in flight: every connection went back to the pool, none leaked by a failure
    # (a leak per kill would exhaust the pool and hang the store after enough faults).
    assert store.engine.pool.checkedout() == 0
    assert kills > 0
    assert outcomes["saved"] > 0
    record(
        "faults",
        f"{name} killed connections",
        {
            "connections killed": kills,
            "operations": ROUNDS * 2,
            **outcomes,
            "acknowledged writes": outcomes["saved"] + outcomes["appended"],
            "acknowledged writes lost": len(lost),
        },
    )


async def _get(store: ThreadStore, thread_id: str) -> Thread:
    thread = await store.get(thread_id)
    assert thread is not None
    return thread


async def test_mariadb_writers_read_committed_and_readers_keep_one_snapshot() -> None:
    """What the write path's per-transaction ``SET TRANSACTION`` must keep: a writer sees rows
    committed while it runs (READ COMMITTED: no gap locks between writers), a reader does not
    (REPEATABLE READ: a page read in several queries is one snapshot)."""
    url = service_url("mysql")
    store = await ThreadStore.create(url, namespace=fresh_namespace())
    backend = store.backend
    assert isinstance(backend, SQLBackend)
    table = f"tyler_isolation_{uuid.uuid4().hex[:8]}"
    other = ThreadStore(url)
    seen: dict[str, tuple[int, int]] = {}
    try:
        async with other.engine.begin() as connection:
            await connection.execute(text(f"CREATE TABLE {table} (x int)"))
        for kind, transaction in (("writer", backend.writer), ("reader", backend.reader)):
            async with transaction() as connection:
                count = text(f"SELECT COUNT(*) FROM {table}")
                before = int((await connection.execute(count)).scalar_one())
                async with other.engine.begin() as inserting:
                    await inserting.execute(text(f"INSERT INTO {table} VALUES (1)"))
                after = int((await connection.execute(count)).scalar_one())
            seen[kind] = (before, after)
    finally:
        async with other.engine.begin() as connection:
            await connection.execute(text(f"DROP TABLE IF EXISTS {table}"))
        await other.close()
        await backend.drop()
        await store.close()
    assert seen == {"writer": (0, 1), "reader": (1, 1)}
