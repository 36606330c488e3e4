"""The Redis backend under faults: connections killed mid-save, replies lost (retried scripts),
saves that crashed between their steps, and what one save costs in commands."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from tests.redis_support import CountingConnection, opened_stores
from tests.services import service_url
from tyler_core.errors import BackendError, ConcurrencyError
from tyler_core.models import Message, Thread
from tyler_core.store import ThreadStore
from tyler_core.testing.base import fresh_namespace
from tyler_redis import layout, scripts
from tyler_redis.backend import RedisBackend


def _backend(store: ThreadStore) -> RedisBackend:
    backend = store.backend
    assert isinstance(backend, RedisBackend)
    return backend


stores = pytest.fixture(name="stores")(opened_stores)


async def _open(stores: list[ThreadStore], url: str, **options: Any) -> ThreadStore:
    store = await ThreadStore.create(url, **options)
    stores.append(store)
    return store


def _thread(thread_id: str, messages: int, *, text: str = "round 0") -> Thread:
    thread = Thread(id=thread_id, title=text, attributes={"round": 0})
    for number in range(messages):
        thread.add_message(Message(role="user", content=f"{text} #{number} " + "x" * 200))
    return thread


def _assert_whole(thread: Thread, size: int) -> int:
    """The round a stored thread is at; fails if its parts come from different saves."""
    round_ = thread.attributes["round"]
    assert thread.title == f"round {round_}"
    assert len(thread.messages) == size
    assert all(str(m.content).startswith(f"round {round_} #") for m in thread.messages)
    sequences = [m.sequence or 0 for m in thread.messages]
    assert sequences == sorted(sequences)
    assert len(set(sequences)) == size
    return int(round_)


# -- killed connections --------------------------------------------------------------------------


async def _kill_clients(admins: list[Redis], name: str) -> int:
    killed = 0
    for admin in admins:
        for client in await admin.client_list():
            if client.get("name") == name:
                await admin.client_kill_filter(_id=client["id"])
                killed += 1
    return killed


async def _spend_killed_idle_connections(store: ThreadStore) -> None:
    """Without retries, a connection killed while idle in the pool fails the one command that
    uses it next (redis-py then reconnects): spend those failures on every node, here."""
    client = _backend(store).client
    for _ in range(3):
        with contextlib.suppress(RedisError):
            if isinstance(client, RedisCluster):
                await client.ping(target_nodes=RedisCluster.ALL_NODES)
            else:
                await client.ping()


def _admins(store: ThreadStore, url: str) -> list[Redis]:
    """Plain clients on every server node of ``store``."""
    client = _backend(store).client
    if isinstance(client, RedisCluster):
        return [Redis(host=node.host, port=int(node.port)) for node in client.get_nodes()]
    return [Redis.from_url(url.split("?")[0])]


@pytest.mark.slow
@pytest.mark.parametrize("service", ["redis", "redis_cluster"])
@pytest.mark.parametrize("retries", ["default", "none"])
async def test_killed_connection_leaves_the_old_or_the_new_thread(
    stores: list[ThreadStore], service: str, retries: str
) -> None:
    """A second client kills the store's connections at random instants while saves of a
    300-message thread run: the stored thread is always one whole version and the indexes agree
    with it. With the default retries every save and the next operation succeed (a script whose
    reply was lost is recognised when it runs again); without retries a save may fail, and then
    nothing of it is stored."""
    url = service_url(service)
    name = f"tyler_kill_{uuid.uuid4().hex[:12]}"
    namespace = fresh_namespace()
    extra: dict[str, Any] = {"client_name": name}
    if retries == "none":
        extra["retry"] = Retry(NoBackoff(), 0)
    store = await _open(stores, url, namespace=namespace, **extra)
    observer = await _open(stores, url, namespace=namespace)
    admins = _admins(store, url)
    size = 300
    thread = await store.save(_thread("victim", size))
    kills = 0
    outcomes: dict[str, int] = {"saved": 0, "failed": 0, "stale": 0}
    previous = 0

    async def kill_soon() -> None:
        nonlocal kills
        await asyncio.sleep(random.uniform(0, 0.004))
        kills += await _kill_clients(admins, name)

    try:
        # A cluster client pauses before it reconnects to a node: fewer rounds there.
        for round_ in range(1, 40 if service == "redis" else 12):
            text = f"round {round_}"
            thread.title = text
            thread.attributes["round"] = round_
            thread.messages.pop(0)
            thread.add_message(Message(role="user", content=text))
            for number, message in enumerate(thread.messages):
                message.content = f"{text} #{number} " + "x" * 200
            killer = asyncio.create_task(kill_soon())
            try:
                await store.save(thread)
                outcomes["saved"] += 1
            except ConcurrencyError:
                # The save went through but its reply was lost: this object is now stale.
                outcomes["stale"] += 1
            except BackendError:
                outcomes["failed"] += 1
            await killer
            if retries == "default":
                assert outcomes["saved"] == round_

            stored = await observer.get("victim")
            assert stored is not None
            at = _assert_whole(stored, size)
            assert at in (previous, round_)
            previous = at
            assert [t.id for t in await observer.list()] == ["victim"]
            assert [t.id for t in await observer.find_by_attributes({"round": at})] == ["victim"]
            assert await observer.find_by_attributes({"round": at + 1}) == []

            if retries == "default":
                # The next operation on the killed store succeeds; go on from what is stored.
                reloaded = await store.get("victim")
            else:
                # Without retries, a connection killed while idle in the pool fails the one
                # command that uses it next (redis-py then reconnects): the next save may fail.
                reloaded = await observer.get("victim")
            assert reloaded is not None
            assert _assert_whole(reloaded, size) == at
            thread = reloaded
    finally:
        for admin in admins:
            await admin.aclose()
    assert kills > 0
    assert outcomes["saved"] > 0
    if retries == "none":
        await _spend_killed_idle_connections(store)
    thread.title = "round 99"
    thread.attributes["round"] = 99
    for number, message in enumerate(thread.messages):
        message.content = f"round 99 #{number}"
    await store.save(thread)
    final = await observer.get("victim")
    assert final is not None
    assert _assert_whole(final, size) == 99


@pytest.mark.parametrize("service", ["redis", "redis_cluster"])
@pytest.mark.parametrize("retries", ["default", "none"])
@pytest.mark.parametrize("moment", ["before the thread script", "while the script is queued"])
async def test_connection_killed_in_the_middle_of_a_save(
    stores: list[ThreadStore],
    monkeypatch: pytest.MonkeyPatch,
    service: str,
    retries: str,
    moment: str,
) -> None:
    """The connection dies after the save added its index entries (on a cluster; on a standalone
    server the save is one script), either just before the thread script is sent or while the
    server holds it (``CLIENT PAUSE``). With retries the save goes through whole; without, it
    fails and nothing of it is stored. Either way the indexes agree with the stored thread and
    the next operation succeeds."""
    url = service_url(service)
    name = f"tyler_kill_{uuid.uuid4().hex[:12]}"
    namespace = fresh_namespace()
    extra: dict[str, Any] = {"client_name": name}
    if retries == "none":
        extra["retry"] = Retry(NoBackoff(), 0)
    store = await _open(stores, url, namespace=namespace, **extra)
    observer = await _open(stores, url, namespace=namespace)
    admins = _admins(store, url)
    thread = await store.save(_thread("victim", 50))
    original = scripts.run
    killed: list[int] = []

    async def run(client: Any, script: scripts.Script, keys: Any, args: Any) -> Any:
        if script in (scripts.WRITE, scripts.WRITE_AND_INDEX) and not killed:
            if moment == "before the thread script":
                killed.append(await _kill_clients(admins, name))
            else:
                for admin in admins:
                    await admin.client_pause(300, all=False)

                async def kill_while_paused() -> None:
                    await asyncio.sleep(0.05)
                    killed.append(await _kill_clients(admins, name))

                killer = asyncio.create_task(kill_while_paused())
                try:
                    return await original(client, script, keys, args)
                finally:
                    await killer
        return await original(client, script, keys, args)

    monkeypatch.setattr(scripts, "run", run)
    thread.title = "round 1"
    thread.attributes["round"] = 1
    for number, message in enumerate(thread.messages):
        message.content = f"round 1 #{number}"
    try:
        if retries == "default":
            await store.save(thread)
        else:
            with pytest.raises(BackendError, match="Connection"):
                await store.save(thread)
    finally:
        monkeypatch.setattr(scripts, "run", original)
        for admin in admins:
            await admin.aclose()
    assert killed and killed[0] > 0
    expected = 1 if retries == "default" else 0
    stored = await observer.get("victim")
    assert stored is not None
    assert _assert_whole(stored, 50) == expected
    assert stored.version == expected + 1
    assert [t.id for t in await observer.find_by_attributes({"round": expected})] == ["victim"]
    assert await observer.find_by_attributes({"round": 1 - expected}) == []
    assert [t.version for t in await observer.list()] == [expected + 1]

    # The next operation on the same store succeeds.
    again = await store.get("victim")
    assert again is not None
    again.title = "round 2"
    again.attributes["round"] = 2
    for number, message in enumerate(again.messages):
        message.content = f"round 2 #{number}"
    await store.save(again)
    final = await observer.get("victim")
    assert final is not None
    assert _assert_whole(final, 50) == 2


# -- retried scripts -----------------------------------------------------------------------------


class _RunTwice:
    """Runs one script twice, as redis-py does when a reply is lost and it retries."""

    def __init__(self, script: scripts.Script) -> None:
        self.script = script
        self.original = scripts.run

    async def __call__(self, client: Any, script: scripts.Script, keys: Any, args: Any) -> Any:
        reply = await self.original(client, script, keys, args)
        if script is self.script:
            reply = await self.original(client, script, keys, args)
        return reply


# The script that writes the thread: one step on a standalone server, step 2 on a cluster.
_THREAD_SCRIPTS = {
    "redis": (scripts.WRITE_AND_INDEX, scripts.APPEND_AND_INDEX),
    "redis_cluster": (scripts.WRITE, scripts.APPEND),
}


@pytest.mark.parametrize("service", ["redis", "redis_cluster"])
async def test_a_retried_write_is_applied_once(
    stores: list[ThreadStore], monkeypatch: pytest.MonkeyPatch, service: str
) -> None:
    store = await _open(stores, service_url(service), namespace=fresh_namespace())
    thread = _thread("t", 3)
    thread.source = {"name": "slack", "channel": "C1"}
    await store.save(thread)
    monkeypatch.setattr(scripts, "run", _RunTwice(_THREAD_SCRIPTS[service][0]))
    thread.add_message(Message(role="user", content="round 0 #3"))
    await store.save(thread)
    assert thread.version == 2
    # A retried write that moves the lookup members too.
    thread.attributes["round"] = 1
    thread.source["channel"] = "C2"
    await store.save(thread)
    assert thread.version == 3
    stored = await store.get("t")
    assert stored is not None
    assert stored.version == 3
    assert [m.sequence for m in stored.messages] == [1, 2, 3, 4]
    monkeypatch.undo()
    assert [t.id for t in await store.list()] == ["t"]
    assert [t.id for t in await store.find_by_attributes({"round": 1})] == ["t"]
    assert await store.find_by_attributes({"round": 0}) == []
    assert [t.id for t in await store.find_by_source("slack", {"channel": "C2"})] == ["t"]
    assert await store.find_by_source("slack", {"channel": "C1"}) == []
    backend = _backend(store)
    await store.count()  # an index command: the last save's step 3 goes with it
    assert await backend.client.zcard(backend._layout.list_key) == 1
    assert await backend.client.scard(backend._layout.attribute_key("round", 0)) == 0
    assert await backend.client.scard(backend._layout.attribute_key("round", 1)) == 1


@pytest.mark.parametrize("service", ["redis", "redis_cluster"])
async def test_a_retried_append_is_applied_once(
    stores: list[ThreadStore], monkeypatch: pytest.MonkeyPatch, service: str
) -> None:
    store = await _open(stores, service_url(service), namespace=fresh_namespace())
    await store.save(_thread("t", 3))
    monkeypatch.setattr(scripts, "run", _RunTwice(_THREAD_SCRIPTS[service][1]))
    added = await store.append("t", Message(role="user", content="a"), Message(role="user"))
    assert [m.sequence for m in added] == [4, 5]
    stored = await store.get("t")
    assert stored is not None
    assert stored.version == 2
    assert [m.sequence for m in stored.messages] == [1, 2, 3, 4, 5]
    monkeypatch.undo()
    assert [t.id for t in await store.list()] == ["t"]
    backend = _backend(store)
    assert await backend.client.zcard(backend._layout.list_key) == 1


# -- crashed saves -------------------------------------------------------------------------------


async def test_entries_of_a_save_that_crashed_never_give_a_wrong_answer(
    stores: list[ThreadStore],
) -> None:
    """A save that added its index entries and died before the thread write (or a thread that
    was never written at all) leaves entries that no reader returns; once they are older than
    the grace period, readers remove them."""
    store = await _open(stores, service_url("redis"), namespace=fresh_namespace())
    backend = _backend(store)
    thread = _thread("real", 2)
    thread.source = {"name": "slack", "channel": "C1"}
    await store.save(thread)
    real = await store.get("real")
    assert real is not None
    keys = backend._layout

    # The crashed save would have moved "real" to the top of the list, with other values.
    future = real.updated_at.replace(year=real.updated_at.year + 1)
    crashed = keys.lookup_suffixes({"round": 7}, {"name": "slack", "channel": "C2"})
    await backend._begin(
        "real", layout.list_prefix("real", future), [keys.key_of(s) for s in crashed]
    )
    # And a thread that was never written at all.
    ghost = keys.lookup_suffixes({"round": 0}, {"name": "slack", "channel": "C1"})
    await backend._begin(
        "ghost", layout.list_prefix("ghost", future), [keys.key_of(s) for s in ghost]
    )

    async def answers() -> None:
        listed = await store.list()
        assert [(t.id, t.updated_at, t.version) for t in listed] == [("real", real.updated_at, 1)]
        assert [t.id for t in await store.list_recent()] == ["real"]
        assert await store.count() == 1
        assert [t.id for t in await store.find_by_attributes({"round": 0})] == ["real"]
        assert await store.find_by_attributes({"round": 7}) == []
        assert [t.id for t in await store.find_by_source("slack", {"channel": "C1"})] == ["real"]
        assert await store.find_by_source("slack", {"channel": "C2"}) == []
        assert await store.get("ghost") is None

    client = backend.client
    await answers()
    assert await client.zcard(keys.list_key) == 3  # young entries stay: a save may be in flight

    backend.stale_entry_grace = 0
    await answers()
    assert await client.zcard(keys.list_key) == 1
    assert await client.scard(keys.attribute_key("round", 0)) == 1
    assert await client.scard(keys.attribute_key("round", 7)) == 0


@pytest.mark.parametrize("service", ["redis", "redis_cluster"])
async def test_a_stale_save_removes_its_own_entries(
    stores: list[ThreadStore], service: str
) -> None:
    """On a cluster it added them before the thread script refused it; on a standalone server
    the one script that refused it added none."""
    store = await _open(stores, service_url(service), namespace=fresh_namespace())
    backend = _backend(store)
    thread = await store.save(_thread("t", 1))
    copy = await store.get("t")
    assert copy is not None
    thread.attributes["round"] = 1
    await store.save(thread)
    copy.attributes["round"] = 2
    with pytest.raises(ConcurrencyError):
        await store.save(copy)
    await store.count()  # an index command: the failed save's step 3 (cluster) goes with it
    assert await backend.client.zcard(backend._layout.list_key) == 1
    assert await backend.client.scard(backend._layout.attribute_key("round", 2)) == 0
    assert await backend.client.scard(backend._layout.attribute_key("round", 0)) == 0
    assert [t.id for t in await store.find_by_attributes({"round": 1})] == ["t"]


# -- cost ----------------------------------------------------------------------------------------


async def _one_more_message(store: ThreadStore, size: int, measure: Any) -> tuple[Any, Any]:
    """What saving one more message on a thread of ``size`` messages costs, and what reading
    it back costs, as ``measure`` counts them."""
    await store.save(_thread(f"t{size}", size))
    loaded = await store.get(f"t{size}")
    assert loaded is not None
    loaded.add_message(Message(role="user", content="one more"))
    await store.save(loaded)  # warm: scripts cached, connection open
    loaded.add_message(Message(role="user", content="and another"))
    async with measure() as save_cost:
        await store.save(loaded)
    async with measure() as read_cost:
        again = await store.get(f"t{size}")
    assert again is not None
    assert len(again.messages) == size + 2
    await store.delete(f"t{size}")
    return save_cost, read_cost


async def test_saving_one_more_message_sends_as_many_commands_for_10_and_1000_messages(
    stores: list[ThreadStore],
) -> None:
    """Counted on the client: every command the store's connections send."""
    store = await _open(
        stores,
        service_url("redis"),
        namespace=fresh_namespace(),
        connection_class=CountingConnection,
    )

    @contextlib.asynccontextmanager
    async def measure() -> AsyncIterator[list[str]]:
        CountingConnection.sent.clear()
        sent: list[str] = []
        yield sent
        sent += CountingConnection.sent

    save_10, read_10 = await _one_more_message(store, 10, measure)
    save_1000, read_1000 = await _one_more_message(store, 1000, measure)
    # The whole save, index entries included, in one script: one command, whatever the size.
    assert save_10 == save_1000 == ["EVALSHA"]
    # A whole thread, messages included, in one round trip.
    assert read_10 == read_1000 == ["EVALSHA"]


async def test_saving_one_more_message_costs_the_cluster_as_much_for_10_and_1000_messages(
    stores: list[ThreadStore],
) -> None:
    """Counted on the servers (``INFO commandstats`` of every node, commands run inside the
    scripts included): the test cluster serves no one else."""
    store = await _open(stores, service_url("redis_cluster"), namespace=fresh_namespace())
    admins = _admins(store, service_url("redis_cluster"))

    async def stats() -> dict[str, int]:
        total: dict[str, int] = {}
        for admin in admins:
            for name, values in (await admin.info("commandstats")).items():
                if name not in ("cmdstat_info", "cmdstat_client|list"):
                    total[name] = total.get(name, 0) + int(values["calls"])
        return total

    @contextlib.asynccontextmanager
    async def measure() -> AsyncIterator[dict[str, int]]:
        before = await stats()
        delta: dict[str, int] = {}
        yield delta
        after = await stats()
        delta.update({k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)})

    try:
        save_10, read_10 = await _one_more_message(store, 10, measure)
        save_1000, read_1000 = await _one_more_message(store, 1000, measure)
    finally:
        for admin in admins:
            await admin.aclose()
    assert save_10 == save_1000
    assert save_10["cmdstat_evalsha"] == 2
    assert read_10 == read_1000
    assert read_10["cmdstat_evalsha"] == 1
