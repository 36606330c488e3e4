"""SQL reads: every shape of page statement and every way of sending it gives the same threads,
exactly as they were saved, on PostgreSQL (asyncpg, psycopg), MariaDB and SQLite.

The backend reads a thread by id with a statement of its own on SQLite and MariaDB (the thread's
row, then its messages, one ``UNION ALL``:
:meth:`tyler_sql.pagequeries.PageStatements._one_thread`), sends page statements on the driver's
connection outside a transaction (:mod:`tyler_sql.driverfetch`), and decodes each thread with
its messages in one pydantic call. These tests hold each of those fast paths against the general
one: the page statement every list and lookup uses, executed by SQLAlchemy in a transaction."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.test_sql import dialect_url, drop_namespaces, fresh_store
from tyler_core.models import Attachment, Message, Thread
from tyler_core.store import ThreadStore
from tyler_core.testing.base import fresh_namespace
from tyler_sql import pages as pages_module
from tyler_sql.backend import SQLBackend
from tyler_sql.pages import PageReader, _in_order, _keyed_threads

SERVERS = ["postgres_asyncpg", "postgres_psycopg", "mariadb", "sqlite_file"]


@pytest.fixture(params=SERVERS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One URL per dialect and driver."""
    return dialect_url(request.param, tmp_path)


@pytest_asyncio.fixture(loop_scope="function")
async def store(url: str) -> AsyncIterator[ThreadStore]:
    """A store on a fresh namespace, dropped afterwards."""
    async with fresh_store(url) as opened:
        yield opened


def _backend(store: ThreadStore) -> SQLBackend:
    backend = store.backend
    assert isinstance(backend, SQLBackend)
    return backend


# Text that JSON must escape or that a database might mangle.
HOSTILE = [
    'quote " and backslash \\ and slash /',
    "control \x01\x08\t\n\r\x1f and DEL \x7f",
    "unicode é ß 中文 𝄞 🎉 \u2028\u2029",
    "trailing space ",
    "%s %d %% printf directives",
    "' single quote; DROP TABLE x; --",
    "",
]


def _hostile_thread(rng: random.Random, messages: int = 12) -> Thread:
    stamp = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
    thread = Thread(
        id=f"t {rng.choice(HOSTILE)} {rng.random()}",
        title=rng.choice([None, *HOSTILE]),
        attributes={
            "float": 0.1,
            "big": 1e16,
            "exp": 1.5e-300,
            "int": 2**63 - 1,
            "neg": -(2**63),
            "nested": {"a": [1, 2.5, {"b": None, "c": [True, False]}], "é": '\\"'},
            "text": rng.choice(HOSTILE),
        },
        source=rng.choice([None, {"name": "slack", "channel": rng.choice(HOSTILE)}]),
        created_at=datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
    )
    for number in range(messages):
        role = ("user", "assistant", "tool")[number % 3]
        message = Message(
            id=f"m{number} {rng.choice(HOSTILE)}",
            role=role,
            content=rng.choice(
                [
                    rng.choice(HOSTILE),
                    None,
                    [{"type": "text", "text": rng.choice(HOSTILE)}],
                    "x" * rng.randint(0, 3000),
                ]
            ),
            name=rng.choice([None, *HOSTILE]),
            tool_call_id=f"call {rng.choice(HOSTILE)}" if role == "tool" else None,
            tool_calls=rng.choice([None, [{"id": "c1", "function": {"arguments": '{"a": 1}'}}]]),
            attributes={"n": number, "f": number / 7, "s": rng.choice(HOSTILE)},
            timestamp=stamp + timedelta(microseconds=rng.randint(0, 10**12)),
            source=rng.choice([None, {"name": rng.choice(HOSTILE)}]),
            metrics={"tokens": rng.randint(0, 10**6), "latency": rng.random()},
        )
        thread.add_message(message)
    return thread


def assert_exactly(got: Sequence[Thread], expected: Sequence[Thread]) -> None:
    """Equal field for field, and in what ``==`` forgives (``1`` and ``1.0``, tzinfo types)."""
    assert [t.model_dump() for t in got] == [t.model_dump() for t in expected]
    assert [repr(t) for t in got] == [repr(t) for t in expected]
    for thread in got:
        stamps = [thread.created_at, thread.updated_at, *(m.timestamp for m in thread.messages)]
        assert all(stamp.tzinfo is UTC for stamp in stamps)


async def _load(
    store: ThreadStore, page: Any, parameters: dict[str, Any] | None, *, general: bool
) -> list[Thread]:
    """The threads of a page statement: on the driver's connection if the backend has one
    (``general=False``), else executed by SQLAlchemy in a snapshot transaction."""
    backend = _backend(store)
    reader: PageReader = backend._pages
    if general:
        async with backend.reader() as connection:
            found = await reader.load(connection, page, parameters, snapshot=True)
    else:
        async with backend._statement() as connection:
            found = await reader.load(connection, page, parameters, snapshot=False)
    assert found is not None
    return found


async def test_get_returns_hostile_threads_exactly_as_saved(store: ThreadStore) -> None:
    rng = random.Random(6)
    saved = [await store.save(_hostile_thread(rng)) for _ in range(4)]
    saved.append(await store.save(Thread(id="no messages", title=None)))
    for thread in saved:
        got = await store.get(thread.id)
        assert got is not None
        assert_exactly([got], [thread])
    assert await store.get("missing") is None
    assert await store.get(saved[0].id + " ") is None  # no padding collation


async def test_a_long_thread_decoded_in_slices_comes_back_exactly(store: ThreadStore) -> None:
    # More messages than one decoding call takes: they are decoded in slices, and the messages
    # with attachments or reactions (in the first, a middle and the last slice) keep theirs.
    rng = random.Random(7)
    thread = _hostile_thread(rng, messages=2 * pages_module._SLICE + 7)
    for index in (0, pages_module._SLICE, pages_module._SLICE + 1, len(thread.messages) - 1):
        message = thread.messages[index]
        message.attachments.append(Attachment(filename=f"f{index}.txt", attributes={"i": index}))
        message.reactions["👍"] = [f"user {index}"]
    await store.save(thread)
    got = await store.get(thread.id)
    assert got is not None
    assert_exactly([got], [thread])
    assert got.messages[pages_module._SLICE].attachments[0].attributes == {"i": pages_module._SLICE}


async def test_get_by_id_equals_the_general_page_statement_on_both_paths(
    store: ThreadStore,
) -> None:
    rng = random.Random(7)
    rich = _hostile_thread(rng, 30)
    rich.messages[3].attachments = [
        Attachment(filename='a " é.txt', size=3, attributes={"n": 1e16}),
        Attachment(filename="b.png", status="stored", mime_type="image/png"),
    ]
    rich.messages[7].reactions = {"👍": ["zed", "amy"], "🎉": ["amy"]}
    threads = [
        await store.save(_hostile_thread(rng, 200)),
        await store.save(Thread(id="empty")),
        await store.save(rich),
    ]
    backend = _backend(store)
    reader = backend._pages
    for thread in threads:
        by_id = {"b_thread_id": thread.id}
        general = reader.page([backend._tables.threads.c.id == thread.id], None, 0)
        results = [
            await _load(store, reader.by_id, by_id, general=True),
            await _load(store, general, None, general=True),
        ]
        if not any(m.attachments or m.reactions for m in thread.messages):
            # Outside a transaction a page with attachments answers None (read it again).
            results.append(await _load(store, reader.by_id, by_id, general=False))
            results.append(await _load(store, general, None, general=False))
        for found in results:
            assert_exactly(found, [thread])


async def test_list_pages_equal_the_threads_saved_on_both_paths(store: ThreadStore) -> None:
    rng = random.Random(8)
    saved = [await store.save(_hostile_thread(rng, rng.randint(0, 6))) for _ in range(9)]
    newest_first = sorted(saved, key=lambda t: (t.updated_at, t.id), reverse=True)
    reader = _backend(store)._pages
    for limit, offset in ((None, 0), (4, 0), (4, 3), (20, 8)):
        expected = newest_first[offset:][:limit]
        statement, parameters = reader.lookup((), limit, offset)
        assert_exactly(await _load(store, statement, parameters, general=False), expected)
        assert_exactly(await _load(store, statement, parameters, general=True), expected)
        listed = await store.list(limit=100 if limit is None else limit, offset=offset)
        assert_exactly(listed, expected)


async def test_message_documents_are_the_json_of_the_saved_fields(store: ThreadStore) -> None:
    rng = random.Random(9)
    thread = await store.save(_hostile_thread(rng, 40))
    backend = _backend(store)
    async with backend.reader() as connection:
        rows = (await connection.execute(backend._pages.by_id, {"b_thread_id": thread.id})).all()
    if len(rows[0]) == 6:  # SQLite and MariaDB: the sequence comes along
        rows = list(_in_order(rows))
    head = json.loads(rows[0][0])
    assert head["id"] == thread.id and head["title"] == thread.title
    assert head["attributes"] == thread.attributes and head["source"] == thread.source
    documents = [json.loads(row[2]) for row in rows[1:]]
    assert len(documents) == len(thread.messages)
    for document, message in zip(documents, thread.messages, strict=True):
        expected = message.model_dump(mode="json", exclude={"attachments", "reactions"})
        stamp = datetime.fromisoformat(document.pop("timestamp").replace("Z", "+00:00"))
        assert stamp == message.timestamp
        del expected["timestamp"]
        assert document == expected


async def test_times_keep_their_microseconds_at_both_ends_of_the_range(store: ThreadStore) -> None:
    stamps = [
        datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        datetime(2000, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999998, tzinfo=UTC),
        # asyncpg writes these two as PostgreSQL's 'infinity' and '-infinity'.
        datetime.max.replace(tzinfo=UTC),
        datetime.min.replace(tzinfo=UTC),
    ]
    thread = Thread(id="times", created_at=stamps[-1])
    for stamp in stamps:
        thread.add_message(Message(role="user", content="x", timestamp=stamp))
    saved = await store.save(thread, touch=False)
    got = await store.get(saved.id)
    assert got is not None
    assert [m.timestamp for m in got.messages] == stamps
    assert got.created_at == stamps[-1] and got.created_at.tzinfo is UTC
    assert_exactly([got], [saved])
    assert_exactly(await store.list(), [saved])  # a page's documents too


def test_one_thread_rows_in_any_order_come_back_in_sequence_order() -> None:
    head = ("{}", "token", None, None, None, None)
    messages = [(None, None, f"doc{n}", 0, 0, n) for n in (1, 2, 5, 9, 12)]
    expected = [head, *messages]
    assert _in_order(expected) is expected  # in order already: not copied
    rng = random.Random(10)
    for _ in range(20):
        shuffled = expected[:]
        rng.shuffle(shuffled)
        assert list(_in_order(shuffled)) == expected
    assert list(_in_order([head])) == [head]


def test_keyed_page_rows_in_any_order_come_back_newest_first_in_sequence_order() -> None:
    # MariaDB's page rows (PageStatements._keyed_page): heads with (id, recency), messages with
    # (thread id, sequence), in whatever order the server sends them.
    def head(thread_id: str, recency: str) -> tuple[Any, ...]:
        return (
            f"head {thread_id}",
            f"token {thread_id}",
            None,
            None,
            None,
            thread_id,
            recency,
            None,
        )

    def message(thread_id: str, sequence: int, counts: tuple[int, int] = (0, 0)) -> tuple[Any, ...]:
        document = f"{thread_id} #{sequence}"
        return (None, None, document, *counts, thread_id, None, sequence)

    same = "2026-01-02 03:04:05.000006"
    rows = [
        head("b", same),
        head("a", same),
        head("é", same),  # code point order: "é" > "b" > "a"
        head("old", "2025-12-31 23:59:59.999999"),
        head("new", "2026-01-02 03:04:05.000007"),
        head("empty", "2024-01-01 00:00:00.000000"),
        *[message("a", n) for n in (3, 1, 10, 2)],
        message("b", 1, (1, 0)),
        message("b", 7, (0, 2)),
        message("new", 5),
        (None, None, None, None, None, "empty", None, None),  # a thread's empty message row
    ]
    expected = [
        ("head new", "token new", ["new #5"], []),
        ("head é", "token é", [], []),
        ("head b", "token b", ["b #1", "b #7"], [(0, 1, 0), (1, 0, 2)]),
        ("head a", "token a", ["a #1", "a #2", "a #3", "a #10"], []),
        ("head old", "token old", [], []),
        ("head empty", "token empty", [], []),
    ]
    rng = random.Random(11)
    for _ in range(20):
        shuffled = rows[:]
        rng.shuffle(shuffled)
        assert _keyed_threads(shuffled) == expected
    assert _keyed_threads([]) == []


async def test_pages_of_threads_updated_at_one_instant_follow_their_ids_in_code_point_order(
    store: ThreadStore,
) -> None:
    stamp = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    ids = ["a", "B", "b", "a ", "é", "e\u0301", "𝄞", "中", "Z", "aa", "9", "é2"]
    rng = random.Random(12)
    saved = []
    for number, thread_id in enumerate(ids):
        thread = Thread(id=thread_id, updated_at=stamp)
        for sequence in sorted(rng.sample(range(1, 50), number % 4)):
            # Message ids in the reverse of sequence order: not the order of either index.
            thread.messages.append(
                Message(id=f"m{100 - sequence:03d}", role="user", content="x", sequence=sequence)
            )
        if number % 5 == 1 and thread.messages:
            thread.messages[-1].attachments.append(Attachment(filename=f"{thread_id}.txt"))
            thread.messages[0].reactions["👍"] = [thread_id]
        saved.append(await store.save(thread, touch=False))
    expected = sorted(saved, key=lambda t: t.id, reverse=True)
    assert_exactly(await store.list(), expected)
    assert_exactly(await store.list_recent(), expected)
    pages = [await store.list(limit=5, offset=offset) for offset in range(0, len(ids), 5)]
    assert_exactly([t for page in pages for t in page], expected)
    assert_exactly(await store.list_recent(3), expected[:3])


async def test_a_read_leaves_its_pooled_connection_without_a_snapshot(url: str) -> None:
    # One pooled connection, so every read reuses the one the last read returned: had a read
    # left a transaction open on it (MariaDB begins one with any statement), the next would
    # see that old snapshot instead of the thread saved since.
    namespace = fresh_namespace()
    reader = await ThreadStore.create(url, namespace=namespace, pool_size=1, max_overflow=0)
    writer = await ThreadStore.create(url, namespace=namespace)
    try:
        thread = await writer.save(Thread(id="fresh", attributes={"round": 0}))
        for round_ in range(1, 4):
            got = await reader.get(thread.id)
            listed = await reader.list_recent()
            assert got is not None and got.attributes == {"round": round_ - 1}
            assert [t.attributes for t in listed] == [{"round": round_ - 1}]
            thread.attributes["round"] = round_
            thread.add_message(Message(role="user", content=f"round {round_}"))
            await writer.save(thread)
        got = await reader.get(thread.id)
        assert got is not None and got.version == thread.version
        assert_exactly([got], [thread])
    finally:
        await reader.close()
        await writer.close()
        if not url.startswith("sqlite"):
            await drop_namespaces(url, [namespace])
