# ruff: noqa: F811  (the fixtures of tests.test_sql are imported)
"""The SQL backend's fast saves (:mod:`tyler_sql.fastwrite`: a new thread, messages appended) on
every dialect: they refuse what the statement path refuses and write nothing then, they leave the
rest to that path, they fail whole, and they take the round trips they are meant to."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.services import service_url
from tests.test_sql import (  # noqa: F401  (fixtures)
    StatementCounter,
    _refuse_name_ddl,
    psycopg_url,
    sql_store,
    sql_url,
)
from tyler_core.errors import BackendError, ConcurrencyError
from tyler_core.models import Attachment, Message, Thread
from tyler_core.store import ThreadStore
from tyler_core.testing.base import fresh_namespace
from tyler_sql.backend import SQLBackend


def _thread(messages: int, **fields: Any) -> Thread:
    thread = Thread(attributes={"k": "v"}, source={"name": "test", "n": 1}, **fields)
    for number in range(messages):
        thread.add_message(Message(role="user", content=f"message {number}"))
    return thread


async def _reloaded(store: ThreadStore, thread_id: str) -> Thread:
    thread = await store.get(thread_id)
    assert thread is not None
    return thread


def _fast(store: ThreadStore) -> bool:
    backend = store.backend
    assert isinstance(backend, SQLBackend)
    return backend._fast is not None


async def test_a_stale_append_raises_and_writes_nothing(sql_store: ThreadStore) -> None:
    thread = await sql_store.save(_thread(3))
    first = await _reloaded(sql_store, thread.id)
    second = await _reloaded(sql_store, thread.id)
    first.add_message(Message(role="user", content="first"))
    await sql_store.save(first)
    second.add_message(Message(role="user", content="second"))
    with pytest.raises(ConcurrencyError):
        await sql_store.save(second)
    stored = await _reloaded(sql_store, thread.id)
    assert stored.version == first.version == 2
    assert [m.content for m in stored.messages] == [*(f"message {n}" for n in range(3)), "first"]


async def test_concurrent_appends_to_one_version_let_exactly_one_through(
    sql_store: ThreadStore,
) -> None:
    thread = await sql_store.save(_thread(2))
    copies = [await _reloaded(sql_store, thread.id) for _ in range(6)]
    for number, copy in enumerate(copies):
        copy.add_message(Message(role="user", content=f"copy {number}"))
    outcomes = await asyncio.gather(*(sql_store.save(c) for c in copies), return_exceptions=True)
    saved = [copy for copy, outcome in zip(copies, outcomes, strict=True) if outcome is copy]
    assert len(saved) == 1, outcomes
    assert all(isinstance(o, ConcurrencyError) for o in outcomes if o is not saved[0])
    stored = await _reloaded(sql_store, thread.id)
    assert stored.version == 2
    assert [m.content for m in stored.messages] == [m.content for m in saved[0].messages]


async def test_an_append_to_a_thread_stored_again_under_its_id_is_refused(
    sql_store: ThreadStore,
) -> None:
    thread = await sql_store.save(_thread(2))
    loaded = await _reloaded(sql_store, thread.id)
    assert await sql_store.delete(thread.id)
    again = await sql_store.save(_thread(1, id=thread.id, title="another"))
    assert again.version == loaded.version  # only the incarnation tells them apart
    loaded.add_message(Message(role="user", content="for the old one"))
    with pytest.raises(ConcurrencyError):
        await sql_store.save(loaded)
    stored = await _reloaded(sql_store, thread.id)
    assert stored.title == "another"
    assert [m.content for m in stored.messages] == ["message 0"]


async def test_a_new_thread_whose_id_is_taken_is_refused_and_changes_nothing(
    sql_store: ThreadStore,
) -> None:
    await sql_store.save(_thread(2, id="taken", title="first"))
    before = await _reloaded(sql_store, "taken")
    with pytest.raises(ConcurrencyError):
        await sql_store.save(_thread(3, id="taken", title="second"))
    after = await _reloaded(sql_store, "taken")
    assert after.model_dump() == before.model_dump()
    assert await sql_store.find_by_attributes({"k": "v"}) != []


async def test_new_threads_saved_at_once_under_one_id_store_exactly_one(
    sql_store: ThreadStore,
) -> None:
    threads = [_thread(2, id="contested", title=f"copy {n}") for n in range(5)]
    outcomes = await asyncio.gather(*(sql_store.save(t) for t in threads), return_exceptions=True)
    saved = [t for t, outcome in zip(threads, outcomes, strict=True) if outcome is t]
    assert len(saved) == 1, outcomes
    assert all(isinstance(o, ConcurrencyError) for o in outcomes if o is not saved[0])
    stored = await _reloaded(sql_store, "contested")
    assert stored.title == saved[0].title
    assert len(stored.messages) == 2
    assert [t.id for t in await sql_store.find_by_source("test", {"n": 1})] == ["contested"]


async def test_a_new_thread_and_appends_read_back_exactly(sql_store: ThreadStore) -> None:
    thread = _thread(0, title=None)
    thread.add_message(
        Message(
            role="assistant",
            content=[{"type": "text", "text": 'a \\ "b" 🎉 %s ?'}],
            name="bot",
            tool_calls=[{"id": "c1", "type": "function", "function": {"name": "f"}}],
            attributes={"n": 1e16, "i": 1, "b": True, "f": 1.0},
            metrics={"tokens": 3},
            source={"name": "s"},
        )
    )
    thread.add_message(Message(role="tool", content="42", tool_call_id="c1"))
    await sql_store.save(thread)
    assert (await _reloaded(sql_store, thread.id)).model_dump() == thread.model_dump()
    thread.add_message(Message(role="user", content="", attributes={"x": [1, 2.5, None]}))
    await sql_store.save(thread)
    stored = await _reloaded(sql_store, thread.id)
    assert stored.model_dump() == thread.model_dump()
    assert stored.messages[0].attributes["f"] == 1.0
    assert type(stored.messages[0].attributes["f"]) is float


async def test_several_messages_appended_at_once_read_back_exactly(
    sql_store: ThreadStore,
) -> None:
    # MariaDB sends them as one INSERT ... SELECT of a UNION ALL: each column's type comes from
    # all the rows, the first one null here, a later one long text.
    thread = await sql_store.save(_thread(2))
    thread.add_message(Message(role="assistant", content=None, tool_calls=[{"id": "c"}]))
    thread.add_message(
        Message(role="tool", content="🎉 ' \\ %s " * 20_000, name="n", tool_call_id="c")
    )
    thread.add_message(
        Message(role="user", content=[{"type": "text", "text": "x"}], source={"s": [1.5, None]})
    )
    await sql_store.save(thread)
    stored = await _reloaded(sql_store, thread.id)
    assert stored.model_dump() == thread.model_dump()
    assert len(stored.messages) == 5


async def test_attachments_and_reactions_take_the_statement_path(sql_store: ThreadStore) -> None:
    rich = _thread(1)
    rich.messages[0].attachments = [Attachment(filename="a.txt", size=3)]
    with StatementCounter(sql_store.engine) as counter:
        await sql_store.save(rich)
    assert counter.statements  # through SQLAlchemy, not the fast path
    rich.add_message(Message(role="user", content="liked", reactions={"👍": ["amy"]}))
    with StatementCounter(sql_store.engine) as counter:
        await sql_store.save(rich)
    assert counter.statements
    stored = await _reloaded(sql_store, rich.id)
    assert stored.model_dump() == rich.model_dump()
    rich.add_message(Message(role="user", content="plain"))
    await sql_store.save(rich)
    assert (await _reloaded(sql_store, rich.id)).model_dump() == rich.model_dump()


async def test_fast_saves_send_nothing_through_sqlalchemy(sql_store: ThreadStore) -> None:
    if not _fast(sql_store):
        pytest.skip("psycopg saves through SQLAlchemy statements")
    thread = _thread(3)
    with StatementCounter(sql_store.engine) as counter:
        await sql_store.save(thread)
        thread.add_message(Message(role="user", content="more"))
        await sql_store.save(thread)
        await sql_store.save(thread)  # nothing new: the version and updated_at only
    assert counter.statements == []
    stored = await _reloaded(sql_store, thread.id)
    assert stored.version == 3
    assert len(stored.messages) == 4


async def test_a_fast_save_that_fails_half_way_leaves_the_thread_and_the_pool_intact(
    sql_store: ThreadStore,
) -> None:
    engine = sql_store.engine
    table = f"{sql_store.options.namespace}_messages"
    async with engine.begin() as connection:
        await connection.execute(text(_refuse_name_ddl(engine.dialect.name, table)))
    thread = await sql_store.save(_thread(2))
    before = await _reloaded(sql_store, thread.id)
    thread.add_message(Message(role="user", content="fine"))
    thread.add_message(Message(role="user", content="refused", name="boom"))
    with pytest.raises(BackendError, match="boom"):
        await sql_store.save(thread)
    after = await _reloaded(sql_store, thread.id)
    assert after.model_dump() == before.model_dump()
    refused = _thread(1, id="refused-new")
    refused.add_message(Message(role="user", content="refused", name="boom"))
    with pytest.raises(BackendError, match="boom"):
        await sql_store.save(refused)
    assert await sql_store.get("refused-new") is None
    assert [t.id for t in await sql_store.find_by_attributes({"k": "v"})] == [thread.id]
    # The connections are back in the pool, and the thread takes the next append.
    if engine.url.database not in (None, "", ":memory:"):
        assert engine.pool.checkedout() == 0
    after.add_message(Message(role="user", content="after"))
    await sql_store.save(after)
    assert [m.content for m in (await _reloaded(sql_store, thread.id)).messages][-1] == "after"


# -- the rows written -------------------------------------------------------------------------


def _awkward_thread(thread_id: str) -> Thread:
    """A thread whose rows test every column's encoding on the way to the database."""
    moment = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    thread = Thread(
        id=thread_id,
        title="tïtle \\ ' \" %s 🎉",
        created_at=moment,
        attributes={
            "s": "v",
            "n": 1e16,
            "f": 1.0,
            "big": 2**63 - 1,
            "list": [1, 2.5, None, True, "x"],
            "obj": {"b": 1, "a": {"c": "🎉"}},
            "é 🎉": "\u2028\t\x01",
        },
        source={"name": "sl'ack", "channel": "C1", "n": -0.5, "nested": {"k": [1]}},
    )
    texts = [
        "plain words, and_some PUNCTUATION! 42 x" * 3,
        "Ünïcode ǅ words İ ß ٣ Ⅻ " + "w" * 81 + " end",
        "quotes ' \" \\ %s %% \x01 \n \t \u2028 " + "z" * 100,
    ]
    for number, content in enumerate(texts):
        thread.add_message(
            Message(
                id=f"m{number}",
                role="user",
                content=content,
                timestamp=moment + timedelta(microseconds=number),
                metrics={"tokens": number, "cost": 0.1},
            )
        )
    thread.add_message(
        Message(
            id="m-parts",
            role="assistant",
            timestamp=moment,
            content=[{"type": "text", "text": "Part ONE"}, {"type": "image_url", "image_url": {}}],
            name="bot 🎉",
            tool_calls=[{"id": "c1", "type": "function", "function": {"arguments": '{"a": 1}'}}],
            attributes={"x": [1e-7, 1e300, -0.0]},
            source={"name": "s", "deep": {"a": {"b": None}}},
        )
    )
    thread.add_message(Message(id="m-tool", role="tool", timestamp=moment, tool_call_id="c1 ' \\"))
    thread.add_message(
        Message(id="m-empty", role="user", timestamp=moment.replace(microsecond=0), content="")
    )
    return thread


async def _stored_rows(store: ThreadStore, thread_id: str) -> dict[str, list[tuple[Any, ...]]]:
    """The thread's rows as the driver reads them back (no type processing), without what
    differs between two saves of one thread (``pk``, ``updated_at``, ``incarnation``) and with
    the thread's id left out."""
    namespace = store.options.namespace
    queries = {
        "threads": "SELECT title, created_at, attributes, source, version FROM {ns}_threads "
        "WHERE id = :id",
        "messages": "SELECT * FROM {ns}_messages WHERE thread_id = :id ORDER BY sequence",
        "keys": "SELECT digest, kind, {key}, value FROM {ns}_thread_keys WHERE thread_id = :id "
        "ORDER BY digest",
    }
    key = "`key`" if store.engine.dialect.name == "mysql" else '"key"'
    rows = {}
    async with store.engine.connect() as connection:
        for table, query in queries.items():
            result = await connection.execute(
                text(query.format(ns=namespace, key=key)), {"id": thread_id}
            )
            names = list(result.keys())
            rows[table] = [
                tuple(v for n, v in zip(names, row, strict=True) if n not in ("pk", "thread_id"))
                for row in result.all()
            ]
    return rows


async def test_fast_saves_store_the_rows_the_statement_path_stores(
    sql_store: ThreadStore,
) -> None:
    if not _fast(sql_store):
        pytest.skip("psycopg saves through SQLAlchemy statements")
    backend = sql_store.backend
    assert isinstance(backend, SQLBackend)
    fast_writer = backend._fast
    stored: list[dict[str, list[tuple[Any, ...]]]] = []
    for thread_id, fast in (("fast", True), ("statements", False)):
        backend._fast = fast_writer if fast else None
        with StatementCounter(sql_store.engine) as counter:
            thread = await sql_store.save(_awkward_thread(thread_id))  # a new thread
            more = _awkward_thread(thread_id).messages  # appended: each message once more
            for message in more:
                thread.add_message(message.model_copy(update={"id": f"again-{message.id}"}))
            await sql_store.save(thread)
        assert bool(counter.statements) is not fast
        stored.append(await _stored_rows(sql_store, thread_id))
        reloaded = await _reloaded(sql_store, thread_id)
        assert reloaded.model_dump() == thread.model_dump()
    fast_rows, statement_rows = stored
    assert len(fast_rows["messages"]) == 12
    assert len(fast_rows["keys"]) == 11
    for table, rows in fast_rows.items():
        assert rows == statement_rows[table], table
    backend._fast = fast_writer


# -- round trips -----------------------------------------------------------------------------


@contextmanager
def _counting(monkeypatch: pytest.MonkeyPatch, cls: Any, names: list[str]) -> Iterator[list[str]]:
    """Count calls of ``cls``'s methods ``names`` (one entry per call, the method's name)."""
    calls: list[str] = []

    def counted(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return method(*args, **kwargs)

        return call

    for name in names:
        monkeypatch.setattr(cls, name, counted(name, getattr(cls, name)))
    yield calls


async def _append_and_new(store: ThreadStore, calls: list[str]) -> tuple[int, int]:
    """Calls made by an append to a stored thread, then by the save of a new thread."""
    thread = await store.save(_thread(3))
    await store.get(thread.id)
    thread.add_message(Message(role="user", content="more"))
    calls.clear()
    await store.save(thread)
    appended = len(calls)
    calls.clear()
    await store.save(_thread(2))
    return appended, len(calls)


async def test_an_asyncpg_save_is_one_statement(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncpg  # type: ignore[import-untyped]

    names = ["execute", "executemany", "fetch", "fetchrow", "fetchval", "prepare"]
    store = await ThreadStore.create(service_url("postgres"), namespace=fresh_namespace())
    try:
        with _counting(monkeypatch, asyncpg.Connection, names) as calls:
            appended, new = await _append_and_new(store, calls)
    finally:
        await store.backend.drop()
        await store.close()
    assert (appended, new) == (1, 1)


async def test_a_mariadb_save_is_one_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncmy.connection

    store = await ThreadStore.create(service_url("mysql"), namespace=fresh_namespace())
    try:
        with _counting(monkeypatch, asyncmy.connection.Connection, ["_execute_command"]) as calls:
            appended, new = await _append_and_new(store, calls)
    finally:
        await store.backend.drop()
        await store.close()
    assert (appended, new) == (1, 1)


async def test_a_stale_mariadb_append_is_one_round_trip_and_leaves_the_connection_clean(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncmy.connection

    store = await ThreadStore.create(
        service_url("mysql"), namespace=fresh_namespace(), pool_size=1, max_overflow=0
    )
    try:
        thread = await store.save(_thread(2))
        stale_copy = await _reloaded(store, thread.id)
        thread.add_message(Message(role="user", content="first"))
        await store.save(thread)
        stale_copy.add_message(Message(role="user", content="stale"))
        connection = asyncmy.connection.Connection
        with (
            _counting(monkeypatch, connection, ["_execute_command"]) as calls,
            pytest.raises(ConcurrencyError),
        ):
            await store.save(stale_copy)
        assert len(calls) == 1  # its COMMIT ended the transaction: no ROLLBACK after it
        assert store.engine.pool.checkedout() == 0
        stored = await _reloaded(store, thread.id)
        assert [m.content for m in stored.messages][-2:] == ["message 1", "first"]
        # The one pooled connection takes the next append.
        stored.add_message(Message(role="user", content="after"))
        await store.save(stored)
        assert [m.content for m in (await _reloaded(store, thread.id)).messages][-1] == "after"
    finally:
        await store.backend.drop()
        await store.close()


async def test_a_mariadb_append_that_failed_half_way_does_not_let_a_stale_one_through() -> None:
    # On one connection: an append whose UPDATE matched and whose INSERT then failed, then a
    # stale append; the stale one's inserts must see its own UPDATE's count, not the earlier one.
    store = await ThreadStore.create(
        service_url("mysql"), namespace=fresh_namespace(), pool_size=1, max_overflow=0
    )
    try:
        table = f"{store.options.namespace}_messages"
        async with store.engine.begin() as connection:
            await connection.execute(text(_refuse_name_ddl("mysql", table)))
        thread = await store.save(_thread(2))
        stale_copy = await _reloaded(store, thread.id)
        thread.add_message(Message(role="user", content="refused", name="boom"))
        with pytest.raises(BackendError, match="boom"):
            await store.save(thread)
        fresh = await _reloaded(store, thread.id)
        fresh.add_message(Message(role="user", content="fine"))
        await store.save(fresh)
        stale_copy.add_message(Message(role="user", content="stale"))
        with pytest.raises(ConcurrencyError):
            await store.save(stale_copy)
        stored = await _reloaded(store, thread.id)
        assert [m.content for m in stored.messages] == ["message 0", "message 1", "fine"]
        assert stored.version == fresh.version
    finally:
        await store.backend.drop()
        await store.close()


async def test_a_sqlite_save_is_one_call_to_the_worker_thread(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import aiosqlite

    async with await ThreadStore.create(f"sqlite:///{tmp_path / 'x.db'}") as store:
        with _counting(monkeypatch, aiosqlite.Connection, ["_execute"]) as calls:
            appended, new = await _append_and_new(store, calls)
    assert (appended, new) == (1, 1)


def test_psycopg_has_no_fast_saves() -> None:
    assert not _fast(ThreadStore(psycopg_url()))
