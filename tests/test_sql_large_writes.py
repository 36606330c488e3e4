"""MariaDB refuses a query bigger than its ``max_allowed_packet``: saves and appends whose messages
together exceed it still store everything (the fast path, one query per save, leaves them to the
statement path)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from sqlalchemy import text

from tests.services import service_url
from tests.test_sql import fresh_store
from tyler_core.models import Message, Thread
from tyler_core.store import ThreadStore

#: Together the messages of a save take 1.25 times the server's packet, each a sixteenth of it.
_MESSAGES = 20


@pytest_asyncio.fixture(loop_scope="function")
async def mariadb_store() -> AsyncIterator[ThreadStore]:
    async with fresh_store(service_url("mysql")) as store:
        yield store


async def _message_size(store: ThreadStore) -> int:
    async with store.engine.connect() as connection:
        packet = await connection.scalar(text("SELECT @@max_allowed_packet"))
    return int(packet) // 16


def _contents(size: int) -> list[str]:
    # Quotes and backslashes grow when escaped: the query is bigger still.
    return [(f"{n:02} it's a \\ test") * (size // 16) for n in range(_MESSAGES)]


def _thread_with(content: str) -> Thread:
    thread = Thread()
    thread.add_message(Message(role="user", content=content))
    return thread


async def _stored_contents(store: ThreadStore, thread_id: str) -> list[object]:
    stored = await store.get(thread_id)
    assert stored is not None
    return [m.content for m in stored.messages]


async def test_a_new_thread_bigger_than_the_packet_is_saved_whole(
    mariadb_store: ThreadStore,
) -> None:
    contents = _contents(await _message_size(mariadb_store))
    thread = Thread()
    for content in contents:
        thread.add_message(Message(role="user", content=content))
    await mariadb_store.save(thread)
    stored = await mariadb_store.get(thread.id)
    assert stored is not None
    assert stored.model_dump() == thread.model_dump()


async def test_messages_bigger_than_the_packet_saved_into_a_stored_thread_are_all_stored(
    mariadb_store: ThreadStore,
) -> None:
    contents = _contents(await _message_size(mariadb_store))
    thread = await mariadb_store.save(_thread_with("first"))
    for content in contents:
        thread.add_message(Message(role="user", content=content))
    await mariadb_store.save(thread)
    stored = await mariadb_store.get(thread.id)
    assert stored is not None
    assert stored.model_dump() == thread.model_dump()
    assert [m.content for m in stored.messages] == ["first", *contents]


async def test_an_append_bigger_than_the_packet_stores_every_message(
    mariadb_store: ThreadStore,
) -> None:
    contents = _contents(await _message_size(mariadb_store))
    thread = await mariadb_store.save(_thread_with("first"))
    added = await mariadb_store.append(
        thread.id, *(Message(role="user", content=c) for c in contents)
    )
    assert [m.sequence for m in added] == list(range(2, _MESSAGES + 2))
    assert await _stored_contents(mariadb_store, thread.id) == ["first", *contents]
