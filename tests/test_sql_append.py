"""The SQL backend's fast ``append`` (:mod:`tyler_sql.fastappend`) on every fast driver: it takes
the round trips it is meant to, writes the rows the statement path writes, assigns sequences
after the highest stored one even when another writer commits while it waits, refuses what the
statement path refuses and writes nothing then, and never loses a message to a concurrent
append or save."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import text

from tests.services import service_url
from tests.test_sql import (
    StatementCounter,
    _refuse_name_ddl,
    dialect_url,
    fresh_store,
    psycopg_url,
)
from tests.test_sql_fastwrite import _counting, _reloaded, _thread
from tyler_core.errors import BackendError, ConcurrencyError, ThreadNotFoundError
from tyler_core.models import Attachment, Message
from tyler_core.store import ThreadStore
from tyler_sql.backend import SQLBackend
from tyler_sql.rows import message_row

# The drivers with a fast append (psycopg has none: see test_psycopg_appends_through_statements).
FAST_DIALECTS = ["postgres_asyncpg", "mariadb", "sqlite_file", "sqlite_memory"]


@pytest.fixture(params=FAST_DIALECTS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One URL per fast driver."""
    return dialect_url(request.param, tmp_path)


@pytest_asyncio.fixture(loop_scope="function")
async def store(url: str) -> AsyncIterator[ThreadStore]:
    """A store on a fresh namespace of each fast driver, dropped afterwards."""
    async with fresh_store(url) as opened:
        yield opened


def _backend(store: ThreadStore) -> SQLBackend:
    backend = store.backend
    assert isinstance(backend, SQLBackend)
    return backend


def _memory(store: ThreadStore) -> bool:
    return store.engine.url.database in (None, "", ":memory:")


@contextlib.contextmanager
def _statement_path(store: ThreadStore) -> Iterator[list[str]]:
    """Record each append that took the statement path (its thread id)."""
    backend = _backend(store)
    taken: list[str] = []
    original = backend._append_statements

    async def recorded(thread_id: str, *args: Any, **kwargs: Any) -> list[Message]:
        taken.append(thread_id)
        return await original(thread_id, *args, **kwargs)

    backend._append_statements = recorded  # type: ignore[method-assign]
    try:
        yield taken
    finally:
        del backend._append_statements


async def _raw_rows(
    store: ThreadStore, table: str, thread_id: str, *, without: tuple[str, ...] = ()
) -> list[tuple[Any, ...]]:
    """The rows of ``{namespace}_{table}`` for a thread, as the driver returns them, without
    the surrogate key, the thread id and the columns ``without``, in sequence order for
    messages (digest order for lookup keys)."""
    name = f"{store.options.namespace}_{table}"
    column = "id" if table == "threads" else "thread_id"
    order = {"messages": " ORDER BY sequence", "thread_keys": " ORDER BY digest"}.get(table, "")
    async with store.engine.connect() as connection:
        # A textual query: the driver's values, untouched by the columns' types.
        result = await connection.execute(
            text(f"SELECT * FROM {name} WHERE {column} = :thread_id{order}"),
            {"thread_id": thread_id},
        )
        names = list(result.keys())
        rows = result.all()
    skip = {"pk", "thread_id", *without}
    if table == "threads":
        skip.add("id")
    return [tuple(v for n, v in zip(names, row, strict=True) if n not in skip) for row in rows]


# -- the fast path is taken ----------------------------------------------------------------------


async def _calls_of_one_append(store: ThreadStore, calls: list[str]) -> int:
    """Calls made by an append of two messages to a stored thread (and checks what it wrote)."""
    thread = await store.save(_thread(3))
    calls.clear()
    added = await store.append(thread.id, Message(role="user", content="one"), Message(role="user"))
    count = len(calls)
    stored = await _reloaded(store, thread.id)
    assert [m.sequence for m in stored.messages] == [1, 2, 3, 4, 5]
    assert [m.sequence for m in added] == [4, 5]
    assert stored.version == 2
    return count


async def test_an_asyncpg_append_is_one_statement(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncpg  # type: ignore[import-untyped]

    names = ["execute", "executemany", "fetch", "fetchrow", "fetchval", "prepare"]
    async with fresh_store(service_url("postgres")) as store:
        with _counting(monkeypatch, asyncpg.Connection, names) as calls:
            assert await _calls_of_one_append(store, calls) == 1


async def test_a_mariadb_append_is_one_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncmy.connection

    async with fresh_store(service_url("mysql")) as store:
        connection = asyncmy.connection.Connection
        with _counting(monkeypatch, connection, ["_execute_command"]) as calls:
            assert await _calls_of_one_append(store, calls) == 1


async def test_a_sqlite_append_is_one_call_to_the_worker_thread(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import aiosqlite

    async with fresh_store(f"sqlite:///{tmp_path / 'x.db'}") as store:
        with _counting(monkeypatch, aiosqlite.Connection, ["_execute"]) as calls:
            assert await _calls_of_one_append(store, calls) == 1


async def test_an_append_sends_nothing_through_sqlalchemy(store: ThreadStore) -> None:
    thread = await store.save(_thread(2))
    with StatementCounter(store.engine) as counter, _statement_path(store) as slow:
        await store.append(thread.id, Message(role="user", content="fast"))
    assert counter.statements == []
    assert slow == []
    assert [m.content for m in (await _reloaded(store, thread.id)).messages][-1] == "fast"


async def test_attachments_and_reactions_take_the_statement_path(store: ThreadStore) -> None:
    thread = await store.save(_thread(1))
    with_file = Message(role="user", content="file", attachments=[Attachment(filename="a.txt")])
    liked = Message(role="user", content="liked", reactions={"👍": ["amy"]})
    with StatementCounter(store.engine) as counter, _statement_path(store) as slow:
        added = await store.append(thread.id, with_file, Message(role="user", content="plain"))
        added += await store.append(thread.id, liked)
    assert slow == [thread.id, thread.id]
    assert counter.statements  # through SQLAlchemy
    stored = await _reloaded(store, thread.id)
    assert [m.model_dump() for m in stored.messages[1:]] == [m.model_dump() for m in added]
    assert stored.messages[1].attachments[0].filename == "a.txt"
    assert stored.messages[3].reactions == {"👍": ["amy"]}
    assert [m.sequence for m in stored.messages] == [1, 2, 3, 4]


def test_psycopg_appends_through_statements() -> None:
    assert _backend(ThreadStore(psycopg_url()))._appender is None


async def test_psycopg_append_still_appends() -> None:
    async with fresh_store(psycopg_url()) as store:
        thread = await store.save(_thread(2))
        (added,) = await store.append(thread.id, Message(role="user", content="more"))
        assert added.sequence == 3
        assert (await _reloaded(store, thread.id)).version == 2


# -- what is written -----------------------------------------------------------------------------


def _rich_messages() -> list[Message]:
    return [
        Message(
            role="assistant",
            content=[{"type": "text", "text": 'Grüße \\ "b" 🎉 %s ? Straße'}],
            name="bot",
            tool_calls=[{"id": "c1", "type": "function", "function": {"name": "f"}}],
            attributes={"n": 1e16, "i": 1, "b": True, "f": 1.0, "none": None},
            metrics={"tokens": 3},
            source={"name": "s", "x": [1.5, None]},
            timestamp=datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=UTC),
            id="m1",
        ),
        Message(role="tool", content="42 answers " * 50, tool_call_id="c1", id="m2"),
        Message(role="user", content=None, sequence=77, id="m3"),
    ]


async def test_an_append_writes_the_rows_the_statement_path_writes(store: ThreadStore) -> None:
    backend = _backend(store)
    at = datetime(2025, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)
    created = datetime(2024, 1, 1, tzinfo=UTC)
    fast = _thread(2, id="fast", created_at=created)
    slow = _thread(2, id="slow", created_at=created)
    for thread in (fast, slow):
        for number, message in enumerate(thread.messages):
            message.id = f"old{number}"
            message.timestamp = created
        await store.save(thread)
    appended = {}
    messages = _rich_messages()
    for thread, appender in ((fast, backend._appender), (slow, None)):
        backend._appender = appender
        appended[thread.id] = await backend.append(thread.id, messages, updated_at=at)
    assert [m.sequence for m in messages] == [None, None, 77]  # not the callers' objects
    assert [m.model_dump() for m in appended["fast"]] == [m.model_dump() for m in appended["slow"]]
    assert [m.sequence for m in appended["fast"]] == [3, 4, 5]
    for table in ("messages", "threads", "thread_keys"):
        # Each thread has an incarnation token of its own.
        fast_rows = await _raw_rows(store, table, "fast", without=("incarnation",))
        assert fast_rows == await _raw_rows(store, table, "slow", without=("incarnation",))
    assert (await _raw_rows(store, "messages", "fast"))[2:]  # the appended rows are there
    stored = await _reloaded(store, "fast")
    assert stored.updated_at == at
    assert stored.version == 2
    assert [m.model_dump() for m in stored.messages[2:]] == [
        m.model_dump() for m in appended["fast"]
    ]


async def test_an_append_changes_no_lookup_key_and_no_incarnation(store: ThreadStore) -> None:
    thread = await store.save(_thread(1))
    keys = await _raw_rows(store, "thread_keys", thread.id)
    (before,) = await _raw_rows(store, "threads", thread.id)
    await store.append(thread.id, Message(role="user", content="more"))
    assert await _raw_rows(store, "thread_keys", thread.id) == keys
    assert keys
    (after,) = await _raw_rows(store, "threads", thread.id)
    names = ["title", "created_at", "updated_at", "attributes", "source", "version", "incarnation"]
    unchanged = {"title", "created_at", "attributes", "source", "incarnation"}
    assert [a for n, a in zip(names, after, strict=True) if n in unchanged] == [
        b for n, b in zip(names, before, strict=True) if n in unchanged
    ]
    assert await store.find_by_source("test", {"n": 1}) != []
    # The incarnation is the one saves check: a save of the thread as reloaded goes through.
    reloaded = await _reloaded(store, thread.id)
    reloaded.title = "renamed"
    await store.save(reloaded)
    assert (await _reloaded(store, thread.id)).title == "renamed"


async def test_append_returns_copies_in_the_order_given(store: ThreadStore) -> None:
    thread = await store.save(_thread(1))
    mine = [Message(role="user", content=f"m{n}", sequence=99 - n) for n in range(4)]
    added = await store.append(thread.id, *mine)
    assert [m.id for m in added] == [m.id for m in mine]
    assert [m.sequence for m in added] == [2, 3, 4, 5]
    assert [m.sequence for m in mine] == [99, 98, 97, 96]
    assert all(a is not m for a, m in zip(added, mine, strict=True))
    added[0].attributes["changed"] = True
    stored = await _reloaded(store, thread.id)
    assert [m.content for m in stored.messages] == ["message 0", "m0", "m1", "m2", "m3"]
    assert stored.messages[1].attributes == {}


# -- sequences -----------------------------------------------------------------------------------


async def test_sequences_follow_the_highest_after_gaps_and_removed_messages(
    store: ThreadStore,
) -> None:
    thread = _thread(0)
    for sequence in (1, 2, 5):
        thread.messages.append(Message(role="user", content=str(sequence), sequence=sequence))
    await store.save(thread)
    added = await store.append(thread.id, Message(role="user"), Message(role="user"))
    assert [m.sequence for m in added] == [6, 7]
    loaded = await _reloaded(store, thread.id)
    del loaded.messages[-3:]  # 5, 6, 7
    await store.save(loaded)
    (again,) = await store.append(thread.id, Message(role="user", content="after"))
    assert again.sequence == 3
    stored = await _reloaded(store, thread.id)
    assert [(m.sequence, m.content) for m in stored.messages] == [(1, "1"), (2, "2"), (3, "after")]
    assert stored.version == 4


async def test_an_append_to_a_thread_without_messages_starts_at_one(store: ThreadStore) -> None:
    thread = await store.save(_thread(0))
    added = await store.append(thread.id, Message(role="user"), Message(role="assistant"))
    assert [m.sequence for m in added] == [1, 2]


@contextlib.asynccontextmanager
async def _writer_holding(store: ThreadStore, thread_id: str) -> AsyncIterator[None]:
    """Another writer, on a connection of its own: it bumps the thread's version and inserts a
    message ("held") at the next sequence, and commits when the block ends."""
    backend = _backend(store)
    sql = backend._sql
    async with store.engine.connect() as connection:
        await connection.begin()
        bumped = await connection.execute(
            sql.bump_version, {"b_thread_id": thread_id, "b_updated_at": datetime.now(UTC)}
        )
        assert bumped.rowcount == 1
        highest = await connection.scalar(sql.highest_sequence, {"b_thread_id": thread_id})
        held = Message(role="user", content="held", sequence=(highest or 0) + 1)
        await connection.execute(sql.insert_messages, [message_row(thread_id, held)])
        yield
        await connection.commit()


async def test_an_append_waiting_for_another_writer_counts_its_messages(
    store: ThreadStore,
) -> None:
    # PostgreSQL: the statement's snapshot predates the other writer's commit, so the fast
    # append must not trust it (it falls back to its locked transaction).
    if _memory(store):
        pytest.skip("one shared connection: no other writer can hold the thread")
    thread = await store.save(_thread(2))
    with _statement_path(store) as slow:
        async with _writer_holding(store, thread.id):
            waiting = asyncio.create_task(
                store.append(thread.id, Message(role="user", content="waited"))
            )
            await asyncio.sleep(0.3)
            assert not waiting.done()  # it waits for the other writer
        (added,) = await asyncio.wait_for(waiting, 30)
    assert slow == []
    assert added.sequence == 4
    stored = await _reloaded(store, thread.id)
    assert [(m.sequence, m.content) for m in stored.messages][2:] == [(3, "held"), (4, "waited")]
    assert stored.version == 3


# -- refusals ------------------------------------------------------------------------------------


async def test_an_append_to_a_missing_thread_raises_and_writes_nothing(store: ThreadStore) -> None:
    await store.save(_thread(1, id="other"))
    with _statement_path(store) as slow, pytest.raises(ThreadNotFoundError, match="'missing'"):
        await store.append("missing", Message(role="user", content="lost"))
    assert slow == []  # the fast path tells a missing thread itself
    assert await store.get("missing") is None
    assert await _raw_rows(store, "messages", "missing") == []
    assert await store.count() == 1
    # The connection went back to the pool clean: the next append works.
    (added,) = await store.append("other", Message(role="user"))
    assert added.sequence == 2


async def test_a_taken_message_id_raises_and_writes_nothing(store: ThreadStore) -> None:
    thread = await store.save(_thread(2))
    taken = thread.messages[1].id
    rows = await _raw_rows(store, "messages", thread.id)
    header = await _raw_rows(store, "threads", thread.id)
    expected = f"{re.escape(repr(thread.id))}.*{re.escape(repr(taken))}"
    with _statement_path(store) as slow, pytest.raises(ValueError, match=expected):
        await store.append(
            thread.id, Message(role="user", content="new"), Message(role="user", id=taken)
        )
    assert slow == [thread.id]  # the fast path wrote nothing and left the naming to it
    assert await _raw_rows(store, "messages", thread.id) == rows
    assert await _raw_rows(store, "threads", thread.id) == header
    assert (await _reloaded(store, thread.id)).version == 1
    if not _memory(store):
        assert store.engine.pool.checkedout() == 0
    with _statement_path(store) as slow:
        (added,) = await store.append(thread.id, Message(role="user", content="new"))
    assert slow == []
    assert added.sequence == 3


async def test_a_message_id_of_another_thread_is_not_taken(store: ThreadStore) -> None:
    first = await store.save(_thread(1))
    second = await store.save(_thread(1))
    (added,) = await store.append(second.id, Message(role="user", id=first.messages[0].id))
    assert added.sequence == 2


async def test_an_append_that_fails_half_way_writes_nothing(store: ThreadStore) -> None:
    engine = store.engine
    table = f"{store.options.namespace}_messages"
    async with engine.begin() as connection:
        await connection.execute(text(_refuse_name_ddl(engine.dialect.name, table)))
    thread = await store.save(_thread(2))
    before = await _reloaded(store, thread.id)
    with pytest.raises(BackendError, match="boom"):
        await store.append(
            thread.id,
            Message(role="user", content="fine"),
            Message(role="user", content="refused", name="boom"),
        )
    after = await _reloaded(store, thread.id)
    assert after.model_dump() == before.model_dump()
    if not _memory(store):
        assert engine.pool.checkedout() == 0
    (added,) = await store.append(thread.id, Message(role="user", content="after"))
    assert added.sequence == 3


# -- concurrency ---------------------------------------------------------------------------------


async def test_concurrent_appends_lose_nothing_and_number_contiguously(
    store: ThreadStore, url: str
) -> None:
    thread = await store.save(_thread(1))
    stores = [store]
    if not _memory(store):  # and from a second store on the same tables
        stores.append(await ThreadStore.create(url, namespace=store.options.namespace))
    tasks, appends = 8, 6

    async def one(task: int) -> list[Message]:
        added: list[Message] = []
        for number in range(appends):
            messages = [Message(role="user", content=f"{task}-{number}")]
            if number % 2:
                messages.append(Message(role="assistant", content=f"{task}-{number} reply"))
            added += await stores[task % len(stores)].append(thread.id, *messages)
        return added

    try:
        async with asyncio.timeout(60):
            results = await asyncio.gather(*(one(task) for task in range(tasks)))
    finally:
        for other in stores[1:]:
            await other.close()
    added = [m for result in results for m in result]
    stored = await _reloaded(store, thread.id)
    assert len(added) == tasks * appends * 3 // 2
    assert len(stored.messages) == 1 + len(added), "an append was lost"
    assert [m.sequence for m in stored.messages] == list(range(1, len(stored.messages) + 1))
    assert sorted(m.sequence or 0 for m in added) == list(range(2, len(stored.messages) + 1))
    by_id = {m.id: m for m in stored.messages}
    assert all(by_id[m.id].sequence == m.sequence for m in added)
    # The messages of one append are adjacent and in order.
    for result in results:
        for first, second in itertools.pairwise(result):
            if second.content == f"{first.content} reply":
                assert second.sequence == (first.sequence or 0) + 1
    assert stored.version == 1 + tasks * appends


async def test_a_save_from_before_an_append_raises(store: ThreadStore) -> None:
    thread = await store.save(_thread(2))
    loaded = await _reloaded(store, thread.id)
    await store.append(thread.id, Message(role="user", content="appended"))
    loaded.add_message(Message(role="user", content="stale"))
    with pytest.raises(ConcurrencyError):
        await store.save(loaded)
    renamed = await _reloaded(store, thread.id)
    renamed.title = "stale too"
    await store.append(thread.id, Message(role="user", content="again"))
    with pytest.raises(ConcurrencyError):
        await store.save(renamed)
    stored = await _reloaded(store, thread.id)
    assert [m.content for m in stored.messages][-2:] == ["appended", "again"]
    assert stored.version == 3


async def test_appends_interleaved_with_saves_lose_nothing(store: ThreadStore) -> None:
    thread = await store.save(_thread(1))
    appended: list[Message] = []
    saved: list[str] = []

    async def appender(task: int) -> None:
        for number in range(6):
            appended.extend(
                await store.append(thread.id, Message(role="user", id=f"a{task}-{number}"))
            )

    async def saver(task: int) -> None:
        for number in range(4):
            while True:
                loaded = await _reloaded(store, thread.id)
                loaded.add_message(Message(role="assistant", id=f"s{task}-{number}"))
                loaded.attributes["by"] = task
                try:
                    await store.save(loaded)
                except ConcurrencyError:
                    continue
                saved.append(f"s{task}-{number}")
                break

    async with asyncio.timeout(60):
        await asyncio.gather(*(appender(t) for t in range(3)), *(saver(t) for t in range(3)))
    stored = await _reloaded(store, thread.id)
    ids = [m.id for m in stored.messages]
    assert sorted(ids[1:]) == sorted([m.id for m in appended] + saved)
    assert len(ids) == 1 + 3 * 6 + 3 * 4
    # Saves number their messages from the highest too: no gap, no repeat.
    assert [m.sequence for m in stored.messages] == list(range(1, len(ids) + 1))
    by_id = {m.id: m.sequence for m in stored.messages}
    assert all(by_id[m.id] == m.sequence for m in appended)
    assert stored.version == 1 + 3 * 6 + 3 * 4
