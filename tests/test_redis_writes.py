"""Redis saves and appends in as few steps as the server allows: one script each on a standalone
server (index entries included), two on a cluster; a save that changed only messages keeps the
thread's lookup members. What must hold whatever the path: a stale save writes nothing, a
re-created thread refuses a stale object, concurrent writers lose nothing, and what is read back
equals what was saved."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.redis_support import CountingConnection, opened_stores
from tests.services import service_url
from tyler_core.errors import ConcurrencyError
from tyler_core.models import Attachment, Message, Thread
from tyler_core.store import ThreadStore
from tyler_core.testing.base import exact, fresh_namespace, stored_form
from tyler_redis.backend import RedisBackend

SERVICES = ["redis", "redis_cluster"]


stores = pytest.fixture(name="stores")(opened_stores)


async def _open(stores: list[ThreadStore], service: str, **options: Any) -> ThreadStore:
    options.setdefault("namespace", stores[0].options.namespace if stores else fresh_namespace())
    store = await ThreadStore.create(service_url(service), **options)
    stores.append(store)
    return store


def _backend(store: ThreadStore) -> RedisBackend:
    backend = store.backend
    assert isinstance(backend, RedisBackend)
    return backend


def _thread(thread_id: str = "t", messages: int = 3) -> Thread:
    thread = Thread(
        id=thread_id,
        title="first",
        attributes={"tier": "pro", "customer": "c1"},
        source={"name": "slack", "channel": "C1"},
    )
    for number in range(messages):
        thread.add_message(Message(role="user", content=f"message {number}"))
    return thread


async def _raw(store: ThreadStore, thread_id: str = "t") -> dict[str, Any]:
    """Every key of the thread and of the index as stored, after waiting index work is done.

    Pending tokens only where no operation can leave one behind (on a cluster a failed save
    keeps its token while the outcome of an earlier attempt is unknown, until a reader clears
    it)."""
    backend = _backend(store)
    await store.count()  # an index command: waiting step-3 records go with it
    client, keys = backend.client, backend._layout
    header, messages, sequences, order = keys.thread_keys(thread_id)
    lookups = [
        keys.attribute_key("tier", "pro"),
        keys.attribute_key("tier", "team"),
        keys.attribute_key("customer", "c1"),
        keys.source_key("name", "slack"),
        keys.source_key("channel", "C1"),
    ]
    return {
        "header": await client.hgetall(header),
        "messages": await client.hgetall(messages),
        "sequences": await client.hgetall(sequences),
        "order": await client.zrange(order, 0, -1),
        "list": await client.zrange(keys.list_key, 0, -1),
        "members": await client.hgetall(keys.members_key),
        "pending": {} if backend._cluster else await client.hgetall(keys.pending_key),
        "lookups": [sorted(await client.smembers(key)) for key in lookups],
    }


# -- stale saves ---------------------------------------------------------------------------------

_EDITS = ["append-only", "title", "attributes", "whole"]


def _edit(thread: Thread, edit: str) -> Thread:
    """A save of kind ``edit`` from ``thread`` (a loaded object)."""
    if edit == "whole":  # a new object under a taken id: written in full, expects version 0
        return _thread(thread.id, 2)
    thread.add_message(Message(role="user", content="stale"))
    if edit == "title":
        thread.title = "stale"
    elif edit == "attributes":
        thread.attributes["tier"] = "team"
    return thread


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("edit", _EDITS)
async def test_a_stale_save_raises_and_writes_nothing(
    stores: list[ThreadStore], service: str, edit: str
) -> None:
    store = await _open(stores, service)
    await store.save(_thread())
    stale = await store.get("t")
    current = await store.get("t")
    assert stale is not None
    assert current is not None
    current.add_message(Message(role="assistant", content="current"))
    await store.save(current)
    before = await _raw(store)
    stored_before = await store.get("t")
    with pytest.raises(ConcurrencyError):
        await store.save(_edit(stale, edit))
    assert await _raw(store) == before
    after = await store.get("t")
    assert after is not None
    assert stored_before is not None
    assert exact(after) == exact(stored_before)
    assert [t.id for t in await store.find_by_attributes({"tier": "pro"})] == ["t"]
    assert await store.find_by_attributes({"tier": "team"}) == []


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("edit", _EDITS[:3])
async def test_a_recreated_thread_refuses_a_stale_objects_save(
    stores: list[ThreadStore], service: str, edit: str
) -> None:
    """Deleted and stored again at the same version: only the incarnation tells them apart."""
    store = await _open(stores, service)
    await store.save(_thread())
    stale = await store.get("t")
    assert stale is not None
    assert await store.delete("t")
    recreated = _thread("t", 1)
    recreated.title = "recreated"
    await store.save(recreated)
    assert recreated.version == stale.version
    before = await _raw(store)
    with pytest.raises(ConcurrencyError, match="deleted and stored again"):
        await store.save(_edit(stale, edit))
    assert await _raw(store) == before
    stored = await store.get("t")
    assert stored is not None
    assert exact(stored) == stored_form(recreated)
    assert [t.id for t in await store.find_by_attributes({"tier": "pro"})] == ["t"]


# -- concurrent writers --------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
async def test_concurrent_saves_and_appends_lose_nothing(
    stores: list[ThreadStore], service: str
) -> None:
    first = await _open(stores, service)
    second = await _open(stores, service)
    await first.save(_thread("t", 1))
    rounds = 8

    async def appender(store: ThreadStore, name: str) -> None:
        for number in range(rounds):
            await store.append("t", Message(id=f"{name}-{number}", role="user", content=name))

    async def saver(store: ThreadStore, name: str) -> None:
        for number in range(rounds):
            while True:
                thread = await store.get("t")
                assert thread is not None
                thread.add_message(Message(id=f"{name}-{number}", role="user", content=name))
                try:
                    await store.save(thread)
                    break
                except ConcurrencyError:
                    continue  # another writer went first: load again

    writers = [appender(first, "a1"), appender(second, "a2")]
    writers += [saver(first, "s1"), saver(second, "s2")]
    await asyncio.gather(*writers)
    stored = await first.get("t")
    assert stored is not None
    ids = [m.id for m in stored.messages]
    expected = {f"{name}-{n}" for name in ("a1", "a2", "s1", "s2") for n in range(rounds)}
    assert set(ids[1:]) == expected
    assert len(ids) == 1 + len(expected)
    sequences = [m.sequence for m in stored.messages]
    assert sequences == list(range(1, len(ids) + 1))
    assert stored.version == 1 + len(expected)
    # The index followed every step: one list member, the one the header names.
    await second.count()  # its waiting step-3 records (on a cluster) go with it
    raw = await _raw(first)
    assert raw["list"] == [raw["header"][b"lm"]]
    assert raw["pending"] == {}
    assert [t.version for t in await second.list()] == [stored.version]


# -- what is read back ---------------------------------------------------------------------------


def _rich_thread() -> Thread:
    thread = Thread(
        id="rich 🔑 {x}",
        title="Ünïcode ✓ ключ",
        attributes={"big": 10**16, "float": 1e16, "neg": -0.0, "nested": {"a": [1, {"b": None}]}},
        source={"name": "slack", "channel": "C1", "ts": 1.5},
    )
    thread.add_message(Message(role="system", content="never stored"))
    thread.add_message(
        Message(
            role="user",
            content=[{"type": "text", "text": "see \u2028 attached"}],
            attachments=[Attachment(filename="a.txt", mime_type="text/plain", file_id="f1")],
            attributes={"deep": {"list": [1, 2.5, "x", True, None]}},
        )
    )
    thread.add_message(Message(role="assistant", content="plain", metrics={"tokens": 12}))
    thread.add_message(Message(id="id ключ 🔑 {x}\n\t%7B", role="user", content="odd id"))
    thread.add_reaction(thread.messages[1].id, "👍", "u1")
    return thread


@pytest.mark.parametrize("service", SERVICES)
async def test_every_kind_of_save_reads_back_exactly(
    stores: list[ThreadStore], service: str
) -> None:
    store = await _open(stores, service)
    other = await _open(stores, service)
    thread = _rich_thread()

    async def check() -> None:
        for reader in (store, other):
            stored = await reader.get(thread.id)
            assert stored is not None
            assert exact(stored) == stored_form(thread)
        assert [t.id for t in await other.list()] == [thread.id]
        assert [t.id for t in await other.find_by_attributes({"nested": {"a": [1, {"b": None}]}})]
        found = await other.find_by_source("slack", {"channel": thread.source["channel"]})  # type: ignore[index]
        assert [t.id for t in found] == [thread.id]

    await store.save(thread)  # new, written in full
    await check()
    thread.add_message(Message(role="user", content="appended ✓"))  # messages only
    await store.save(thread)
    await check()
    thread.title = "retitled"  # a thread field, same lookups
    await store.save(thread)
    await check()
    thread.source = {"name": "slack", "channel": "C2"}  # other lookups
    thread.messages[1].attributes["deep"]["list"].append(3)  # an edit in place
    await store.save(thread)
    await check()
    assert await other.find_by_source("slack", {"channel": "C1"}) == []
    removed = thread.messages.pop(3)  # a removal
    await store.save(thread)
    await check()
    assert removed.id not in {m.id for m in (await other.get(thread.id) or thread).messages}
    added = await store.append(thread.id, Message(role="tool", tool_call_id="c1", content="r"))
    loaded = await other.get(thread.id)
    assert loaded is not None
    assert exact(loaded.messages[-1]) == exact(added[0])
    assert loaded.version == thread.version + 1


@pytest.mark.parametrize("service", SERVICES)
async def test_large_saves_and_appends_read_back_exactly(
    stores: list[ThreadStore], service: str
) -> None:
    """More messages per save than the scripts send in one command (they go in slices)."""
    store = await _open(stores, service)
    thread = _thread("big", 2500)
    await store.save(thread)
    for message in thread.messages[:1200]:
        message.content = f"edited {message.sequence}"
    del thread.messages[1300:2400]
    await store.save(thread)
    stored = await store.get("big")
    assert stored is not None
    assert exact(stored) == stored_form(thread)
    batch = [Message(role="user", content=f"batch {n}") for n in range(1200)]
    added = await store.append("big", *batch)
    assert [m.sequence for m in added] == list(range(2501, 3701))
    stored = await store.get("big")
    assert stored is not None
    assert len(stored.messages) == 1400 + 1200
    assert exact(stored.messages[1400:]) == exact(added)


# -- what a save touches -------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
async def test_a_save_of_new_messages_keeps_the_lookup_members(
    stores: list[ThreadStore], service: str
) -> None:
    store = await _open(stores, service)
    thread = await store.save(_thread())
    before = await _raw(store)
    thread.add_message(Message(role="user", content="one more"))
    await store.save(thread)
    after = await _raw(store)
    assert after["header"][b"am"] == before["header"][b"am"]
    assert after["header"][b"ix"] == before["header"][b"ix"]
    assert after["header"][b"d"] == before["header"][b"d"]
    assert after["lookups"] == before["lookups"]
    assert after["header"][b"lm"] != before["header"][b"lm"]
    assert after["list"] == [after["header"][b"lm"]]
    # Then a change of its attributes moves them.
    thread.attributes["tier"] = "team"
    await store.save(thread)
    moved = await _raw(store)
    assert moved["header"][b"am"] != before["header"][b"am"]
    assert moved["lookups"][0] == []  # tier=pro
    assert moved["lookups"][1] == [moved["header"][b"am"]]  # tier=team
    assert all(members == [moved["header"][b"am"]] for members in moved["lookups"][2:])
    assert [t.id for t in await store.find_by_attributes({"tier": "team"})] == ["t"]


async def test_a_title_change_keeps_the_lookup_members_on_one_server(
    stores: list[ThreadStore],
) -> None:
    """The one-step script compares the stored lookup sets with the new ones itself."""
    store = await _open(stores, "redis")
    thread = await store.save(_thread())
    before = await _raw(store)
    thread.title = "second"
    await store.save(thread)
    after = await _raw(store)
    assert after["header"][b"am"] == before["header"][b"am"]
    assert after["lookups"] == before["lookups"]
    assert after["header"][b"d"] != before["header"][b"d"]


async def test_saves_and_appends_are_one_command_on_one_server_and_leave_nothing_pending(
    stores: list[ThreadStore],
) -> None:
    store = await _open(stores, "redis", connection_class=CountingConnection)
    backend = _backend(store)
    client, keys = backend.client, backend._layout
    thread = _thread("warm")
    await store.save(thread)  # scripts cached, connection open
    await store.append("warm", Message(role="user", content="x"))

    @contextlib.asynccontextmanager
    async def one_command() -> AsyncIterator[None]:
        CountingConnection.sent.clear()
        yield
        assert CountingConnection.sent == ["EVALSHA"]

    async with one_command():
        await store.save(_thread("t"))
    async with one_command():
        thread = await store.save(_thread("u"))
    thread.add_message(Message(role="user", content="more"))
    async with one_command():
        await store.save(thread)
    async with one_command():
        await store.append("t", Message(role="user", content="more"))
    thread.attributes["tier"] = "team"
    async with one_command():
        await store.save(thread)
    assert await client.hlen(keys.pending_key) == 0
    assert await client.zcard(keys.list_key) == 3
    assert await client.hlen(keys.members_key) == 3
    # The replaced lookup members go with the next index command, in the same round trip.
    assert await client.scard(keys.attribute_key("tier", "pro")) == 3
    async with one_command():
        await store.append("t", Message(role="user", content="again"))
    assert await client.scard(keys.attribute_key("tier", "pro")) == 2


@pytest.mark.parametrize("service", SERVICES)
async def test_ttl_follows_saves_of_new_messages_and_appends(
    stores: list[ThreadStore], service: str
) -> None:
    store = await _open(stores, service)
    client = _backend(store).client
    thread_keys = _backend(store)._layout.thread_keys("t")

    async def ttls() -> list[int]:
        return [await client.pttl(key) for key in thread_keys]

    thread = await store.save(_thread(), ttl=300)
    assert all(0 < ttl <= 300_000 for ttl in await ttls())
    thread.add_message(Message(role="user", content="kept"))
    await store.save(thread, ttl=600)
    assert all(300_000 < ttl <= 600_000 for ttl in await ttls())
    await store.append("t", Message(role="user", content="appended"))
    assert all(300_000 < ttl <= 600_000 for ttl in await ttls())
    loaded = await store.get("t")
    assert loaded is not None
    loaded.add_message(Message(role="user", content="for ever"))
    await store.save(loaded)
    assert await ttls() == [-1, -1, -1, -1]
    assert await client.hexists(thread_keys[0], "ttl") == 0
    loaded.add_message(Message(role="user", content="still"))
    await store.save(loaded)
    assert await ttls() == [-1, -1, -1, -1]
    assert [t.id for t in await store.list()] == ["t"]
