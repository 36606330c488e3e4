"""Mongo's message expiry without transactions: writers that race never leave a message document
an expiry before the one its thread needs (the TTL index would delete it under the thread).

Each test runs a second writer at the moment a race would put it: between a save's read and its
commit, or between its commit and its expiry bookkeeping.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import pytest

from tests.test_mongo import OpenStore, _backend, _drop_collections, stores
from tyler_core import Message, Thread, ThreadStore
from tyler_core.errors import ConcurrencyError
from tyler_mongo.plans import WritePlan

__all__ = ["_drop_collections", "stores"]


async def _documents(store: ThreadStore, thread_id: str) -> tuple[dict[str, Any], list[Any]]:
    """The thread document and the expiry of each of its message documents."""
    database = _backend(store).database
    namespace = store.options.namespace
    thread = await database[f"{namespace}_threads"].find_one({"_id": thread_id})
    assert thread is not None
    expiries = [
        m.get("expires_at") async for m in database[f"{namespace}_messages"].find({"t": thread_id})
    ]
    return thread, expiries


async def _stored_without_ttl(store: ThreadStore, thread_id: str) -> Thread:
    thread = Thread(id=thread_id)
    thread.add_message(Message(role="user", content="first"))
    thread.add_message(Message(role="assistant", content="second"))
    await store.save(thread)
    loaded = await store.get(thread_id)
    assert loaded is not None
    return loaded


def _before_commit(store: ThreadStore, other: Callable[[], Awaitable[object]]) -> None:
    """Run ``other`` once, just before the next commit of ``store``'s backend."""
    backend = _backend(store)
    original = backend._commit

    async def late_commit(plan: WritePlan, session: Any) -> bool:
        backend._commit = original  # type: ignore[method-assign]
        await other()
        return await original(plan, session)

    backend._commit = late_commit  # type: ignore[method-assign]


def _before_mortal(store: ThreadStore, other: Callable[[], Awaitable[object]]) -> None:
    """Run ``other`` once, after the next commit of ``store``'s backend that gives a thread
    without TTL one, before it gives the thread's messages their expiry."""
    backend = _backend(store)
    original = backend._make_mortal

    async def late(plan: WritePlan, expiry: datetime, session: Any) -> None:
        backend._make_mortal = original  # type: ignore[method-assign]
        await other()
        await original(plan, expiry, session)

    backend._make_mortal = late  # type: ignore[method-assign]


async def test_a_save_with_ttl_that_loses_a_race_gives_no_message_an_expiry(
    stores: OpenStore,
) -> None:
    store = await stores(transactions="off")
    other = await stores(store.options.namespace, transactions="off")
    loaded = await _stored_without_ttl(store, "race")
    loaded.title = "mine"
    _before_commit(store, lambda: other.append("race", Message(role="user", content="theirs")))

    with pytest.raises(ConcurrencyError):
        await store.save(loaded, ttl=1)

    thread, expiries = await _documents(store, "race")
    assert thread.get("expires_at") is None
    assert expiries == [None, None, None]  # the two kept messages and the appended one
    stored = await other.get("race")
    assert stored is not None
    assert [m.content for m in stored.messages] == ["first", "second", "theirs"]


async def test_a_ttl_given_to_a_thread_without_one_reaches_its_messages_after_the_commit(
    stores: OpenStore,
) -> None:
    store = await stores(transactions="off")
    loaded = await _stored_without_ttl(store, "later")
    loaded.title = "now with a ttl"

    await store.save(loaded, ttl=3600)

    thread, expiries = await _documents(store, "later")
    assert len(expiries) == 2
    assert all(e is not None and e >= thread["expires_at"] for e in expiries)


@pytest.mark.parametrize("their_ttl", [None, 86_400])
async def test_a_writer_that_commits_before_the_expiry_bookkeeping_gets_what_it_needs(
    stores: OpenStore, their_ttl: int | None
) -> None:
    # Their save reads this one's commit, then commits before this one gives the messages an
    # expiry: without a TTL they must keep none; with a longer one, theirs or later.
    store = await stores(transactions="off")
    other = await stores(store.options.namespace, transactions="off")
    loaded = await _stored_without_ttl(store, "late")

    async def save_theirs() -> None:
        theirs = await other.get("late")
        assert theirs is not None
        theirs.title = "theirs"
        await other.save(theirs, ttl=their_ttl)

    _before_mortal(store, save_theirs)
    await store.save(loaded, ttl=60)

    thread, expiries = await _documents(store, "late")
    stored = await store.get("late")
    assert stored is not None and stored.title == "theirs"
    if their_ttl is None:
        assert (thread.get("expires_at"), expiries) == (None, [None, None])
    else:
        assert len(expiries) == 2
        assert all(e is not None and e >= thread["expires_at"] for e in expiries)


async def test_a_new_thread_under_an_expired_ones_id_removes_its_messages_quietly(
    stores: OpenStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = await stores()
    expired = Thread(id="reused")
    expired.add_message(Message(role="user", content="old"))
    await store.save(expired, ttl=3600)
    database = _backend(store).database
    namespace = store.options.namespace
    # What the TTL index does once the thread expires; its messages expire one TTL later.
    await database[f"{namespace}_threads"].delete_one({"_id": "reused"})

    caplog.set_level(logging.DEBUG, logger="tyler_mongo")
    await store.save(Thread(id="reused", messages=[Message(role="user", content="new")]))

    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("expired thread" in r.getMessage() for r in caplog.records)
    _, expiries = await _documents(store, "reused")
    assert expiries == [None]
