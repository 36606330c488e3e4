"""The Redis backend: the conformance suite on a standalone server and on a three-node cluster,
plus what only Redis has to prove (atomic saves under killed connections, per-save cost,
index entries left by crashed saves). Start the cluster with ``.ci/redis-cluster.sh``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from tests.services import service_url
from tyler_core.errors import ConcurrencyError, StoreConnectionError
from tyler_core.models import Message, Thread
from tyler_core.settings import StoreOptions
from tyler_core.store import Clock, ThreadStore
from tyler_core.testing import ThreadStoreConformance
from tyler_core.testing.base import fresh_namespace
from tyler_redis.backend import RedisBackend


class TestRedisConformance(ThreadStoreConformance):
    """The whole contract on a standalone Redis."""

    async def open_store(self, namespace: str, *, clock: Clock | None = None) -> ThreadStore:
        return await ThreadStore.create(service_url("redis"), namespace=namespace, clock=clock)


class TestRedisClusterConformance(ThreadStoreConformance):
    """The whole contract on a Redis Cluster."""

    async def open_store(self, namespace: str, *, clock: Clock | None = None) -> ThreadStore:
        return await ThreadStore.create(
            service_url("redis_cluster"), namespace=namespace, clock=clock
        )


# -- opening -------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["redis", "redis+cluster"])
async def test_open_on_a_closed_port_raises_with_the_password_masked(scheme: str) -> None:
    with pytest.raises(StoreConnectionError) as caught:
        await ThreadStore.create(f"{scheme}://:hunter2-secret@127.0.0.1:1", connect_timeout=3)
    text = f"{caught.value!s} {caught.value!r}"
    assert "hunter2-secret" not in text
    assert f"{scheme}://:***@127.0.0.1:1" in text


@pytest.mark.parametrize("service", ["redis", "redis_cluster"])
async def test_open_refuses_a_wrong_password(service: str) -> None:
    url = service_url(service)
    parts = urlsplit(url)
    wrong = urlunsplit(parts._replace(netloc=f"nobody:hunter2-secret@{parts.netloc}"))
    with pytest.raises(StoreConnectionError) as caught:
        await ThreadStore.create(wrong, connect_timeout=5)
    text = f"{caught.value!s} {caught.value!r}"
    assert "hunter2-secret" not in text
    assert "***" in text


@pytest.mark.parametrize(
    ("url", "driver_url", "cluster"),
    [
        ("redis://h:1/2", "redis://h:1/2", False),
        ("rediss://u:p@h/0", "rediss://u:p@h/0", False),
        ("redis+cluster://h:7001", "redis://h:7001", True),
        (
            "REDISS+CLUSTER://h:7001/0?ssl_cert_reqs=none",
            "rediss://h:7001/0?ssl_cert_reqs=none",
            True,
        ),
    ],
    ids=["plain", "tls-with-password", "cluster", "tls-cluster"],  # no password in test ids
)
def test_the_url_picks_the_client(url: str, driver_url: str, cluster: bool) -> None:
    backend = RedisBackend.from_url(url, StoreOptions())
    assert backend._url == driver_url
    assert backend._cluster is cluster


@pytest.mark.parametrize("url", ["redis+cluster://h:7001/3", "redis:///0", "memcached://h"])
def test_unusable_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        RedisBackend.from_url(url, StoreOptions())


# -- layout --------------------------------------------------------------------------------------


@pytest.fixture(params=["redis", "redis_cluster"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[ThreadStore]:
    """A store on a fresh namespace of each server; purged and closed afterwards."""
    store = await ThreadStore.create(service_url(request.param), namespace=fresh_namespace())
    try:
        yield store
    finally:
        await store.backend.purge()
        await store.close()


def _backend(store: ThreadStore) -> RedisBackend:
    backend = store.backend
    assert isinstance(backend, RedisBackend)
    return backend


async def _keys(store: ThreadStore, pattern: str = "*") -> list[str]:
    client = _backend(store).client
    options: dict[str, Any] = {"match": pattern}
    if isinstance(client, RedisCluster):
        options["target_nodes"] = RedisCluster.PRIMARIES
    return sorted([key.decode() async for key in client.scan_iter(**options)])


async def test_a_thread_lives_in_one_slot_under_the_namespace(store: ThreadStore) -> None:
    """Ids with braces, colons, globs and quotes still give one well-formed hash tag."""
    namespace = store.options.namespace
    ids = ["{x}", "a}b{c", "*:?[]", "quo'te\"s", "ключ 🔑", "%7B", "x" * 255]
    for thread_id in ids:
        thread = Thread(id=thread_id, attributes={"k": 1}, source={"name": "s"})
        thread.add_message(Message(role="user", content="hi"))
        await store.save(thread)
    assert sorted(t.id for t in await store.list()) == sorted(ids)
    keys = await _keys(store, f"{namespace}:*")
    thread_keys = [k for k in keys if k.startswith(f"{namespace}:t:")]
    index_keys = [k for k in keys if k.startswith(f"{namespace}:{{{namespace}}}:")]
    assert len(thread_keys) == 4 * len(ids)
    assert len(thread_keys) + len(index_keys) == len(keys)
    by_slot: dict[int, set[str]] = {}
    for key in thread_keys:
        by_slot.setdefault(key_slot(key.encode()), set()).add(key.rsplit(":", 1)[0])
    # Each thread's four keys in one slot (distinct ids may share a slot by chance).
    assert sum(len(tags) for tags in by_slot.values()) == len(ids)
    assert len({key_slot(k.encode()) for k in index_keys}) == 1


async def test_ttl_expires_every_key_of_a_thread_together(store: ThreadStore) -> None:
    client = _backend(store).client
    kept = Thread(id="kept")
    kept.add_message(Message(role="user", content="hi"))
    await store.save(kept)
    short = Thread(id="short")
    short.add_message(Message(role="user", content="hi"))
    await store.save(short, ttl=300)
    await store.append("short", Message(role="user", content="again"))

    async def ttls(thread_id: str) -> list[int]:
        keys = _backend(store)._layout.thread_keys(thread_id)
        return [await client.pttl(key) for key in keys]

    assert await ttls("kept") == [-1, -1, -1, -1]
    assert all(0 < ttl <= 300_000 for ttl in await ttls("short"))
    # Saving without a ttl makes the thread permanent again, every key of it.
    loaded = await store.get("short")
    assert loaded is not None
    await store.save(loaded)
    assert await ttls("short") == [-1, -1, -1, -1]


async def test_entries_of_expired_threads_are_swept(store: ThreadStore) -> None:
    backend = _backend(store)
    client = backend.client
    thread = Thread(id="brief", attributes={"k": 1})
    thread.add_message(Message(role="user", content="hi"))
    await store.save(thread, ttl=0.2)
    await store.save(Thread(id="stays", attributes={"k": 1}))
    for _ in range(100):
        if await store.get("brief") is None:
            break
        await asyncio.sleep(0.05)
    assert await store.get("brief") is None
    assert await store.count() == 1
    assert await client.zcard(backend._layout.list_key) == 2  # young: a save may be in flight
    backend.stale_entry_grace = 0
    assert [t.id for t in await store.list()] == ["stays"]
    assert [t.id for t in await store.find_by_attributes({"k": 1})] == ["stays"]
    assert await client.zcard(backend._layout.list_key) == 1
    assert await client.scard(backend._layout.attribute_key("k", 1)) == 1
    assert await _keys(store, f"{store.options.namespace}:t:{{brief}}:*") == []


async def test_purge_removes_the_namespace_on_every_node_and_nothing_else(
    store: ThreadStore,
) -> None:
    other = await ThreadStore.create(store.database_url, namespace=store.options.namespace + "_x")
    try:
        await other.save(Thread(id="other"))
        for number in range(30):
            await store.save(Thread(id=f"t{number}", attributes={"n": number}))
        await store.count()  # the last save's step 3 goes with the next index command
        namespace = store.options.namespace
        assert len(await _keys(store, f"{namespace}:t:*")) == 30
        # 30 lookup sets, the list, its members by thread and the format mark (no operation
        # is pending and no thread has a ttl, so those two keys do not exist).
        assert len(await _keys(store, f"{namespace}:{{{namespace}}}:*")) == 33
        await store.backend.purge()
        assert await _keys(store, f"{namespace}:*") == []
        assert await store.count() == 0
        assert [t.id for t in await other.list()] == ["other"]
    finally:
        await other.backend.purge()
        await other.close()


async def test_a_bounded_pool_waits_for_a_connection() -> None:
    """With ``pool_size`` the pool blocks instead of failing when every connection is busy."""
    store = await ThreadStore.create(
        service_url("redis"), namespace=fresh_namespace(), pool_size=1, pool_timeout=30
    )
    try:
        await asyncio.gather(*(store.save(Thread(id=f"t{n}")) for n in range(20)))
        assert await store.count() == 20
        assert len(await store.list_recent()) == 20
    finally:
        await store.backend.purge()
        await store.close()


async def test_more_tasks_than_connections_wait_instead_of_failing() -> None:
    """Without ``pool_size`` the default pool (50 connections) also waits: 120 concurrent saves
    all succeed instead of raising MaxConnectionsError."""
    store = await ThreadStore.create(service_url("redis"), namespace=fresh_namespace())
    try:
        await asyncio.gather(*(store.save(Thread(id=f"t{n}")) for n in range(120)))
        assert await store.count() == 120
    finally:
        await store.backend.purge()
        await store.close()


async def test_scripts_are_loaded_again_after_a_flush(store: ThreadStore) -> None:
    thread = Thread(id="t")
    thread.add_message(Message(role="user", content="hi"))
    await store.save(thread)
    client = _backend(store).client
    await client.script_flush()
    assert [t.id for t in await store.list()] == ["t"]  # pipelined EVALSHA
    await client.script_flush()
    assert await store.get("t") is not None  # single EVALSHA
    await client.script_flush()
    await store.append("t", Message(role="user", content="again"))
    loaded = await store.get("t")
    assert loaded is not None
    assert [m.content for m in loaded.messages] == ["hi", "again"]


async def test_a_thread_stored_before_incarnation_tokens_is_checked_by_version(
    store: ThreadStore,
) -> None:
    """A header without the token field (written by an older release) reads back without a
    token; objects loaded from it save by the version check alone, and the first save that
    recreates or replaces it unchecked gives it a token."""
    backend = _backend(store)
    client = backend.client
    header = backend._layout.thread_keys("old")[0]
    thread = Thread(id="old", title="old")
    thread.add_message(Message(role="user", content="hi"))
    await store.save(thread)
    holder = thread.incarnation
    assert holder is not None
    assert await client.hdel(header, "n") == 1

    loaded = await store.get("old")
    assert loaded is not None
    assert loaded.incarnation is None
    loaded.title = "edited"
    await store.save(loaded)
    assert await client.hexists(header, "n") == 0  # an update keeps what is stored: nothing
    # An object that holds a token does not match a stored thread without one.
    thread.version = loaded.version
    thread.title = "from the object with a token"
    with pytest.raises(ConcurrencyError, match="deleted and stored again"):
        await store.save(thread)
    stored = await store.get("old")
    assert stored is not None
    assert stored.title == "edited"
    # A copy (preserve) replaces it unchecked and stores a token.
    await store.save(stored, preserve=True)
    assert stored.incarnation is not None
    assert (await client.hget(header, "n")) == stored.incarnation.encode()
    again = await store.get("old")
    assert again is not None
    assert again.incarnation == stored.incarnation
