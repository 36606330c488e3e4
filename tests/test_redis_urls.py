"""How the Redis backend connects: the URLs it refuses rather than misread, and a cluster client
that waits up to ``pool_timeout`` for a connection, as the standalone one does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from tests.redis_support import opened_stores
from tests.services import service_url
from tyler_core.errors import BackendError, BackendNotFoundError
from tyler_core.models import Thread
from tyler_core.store import ThreadStore
from tyler_core.testing.base import fresh_namespace
from tyler_redis.backend import RedisBackend


@pytest.fixture
async def opened() -> AsyncIterator[list[ThreadStore]]:
    async for stores in opened_stores():
        yield stores


# -- URLs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "redis://u:hunter2@127.0.0.1:6379/abc",
        "redis://u:hunter2@127.0.0.1:6379/1/2",
        "rediss://u:hunter2@127.0.0.1:6379/-1",
        "redis+cluster://u:hunter2@127.0.0.1:7001/x",
        "redis://u:hunter2@127.0.0.1:port/0",
        "redis://u:hunter2@:6379/0",
        "redis://",
        "redis+cluster://",
    ],
    ids=[
        "letters",
        "two-numbers",
        "negative",
        "cluster-letters",
        "port",
        "no-host",
        "bare",
        "bare-cluster",
    ],
)
def test_malformed_urls_are_refused_with_the_password_masked(url: str) -> None:
    with pytest.raises(BackendNotFoundError, match="malformed store URL") as caught:
        ThreadStore(url, namespace="n")
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "driver_url"),
    [
        ("redis://h", "redis://h"),
        ("redis://h:6379/", "redis://h:6379/"),
        ("redis://h:6379/15", "redis://h:6379/15"),
        ("redis+cluster://h:7001/0", "redis://h:7001/0"),
    ],
)
def test_well_formed_database_paths_are_kept(url: str, driver_url: str) -> None:
    backend = ThreadStore(url, namespace="n").backend
    assert isinstance(backend, RedisBackend)
    assert backend._url == driver_url


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0?decode_responses=true",
        "redis+cluster://127.0.0.1:7001?decode_responses=True",
        "redis://127.0.0.1:6379/0?decode_responses=",
    ],
)
def test_decode_responses_in_the_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="decode_responses"):
        ThreadStore(url, namespace="n")


@pytest.mark.parametrize("service", ["redis", "redis_cluster"])
async def test_decode_responses_as_a_keyword_is_overridden(
    service: str, opened: list[ThreadStore]
) -> None:
    store = await ThreadStore.create(
        service_url(service), namespace=fresh_namespace(), decode_responses=True
    )
    opened.append(store)
    await store.save(Thread(id="t", attributes={"k": 1}))
    assert [t.id for t in await store.find_by_attributes({"k": 1})] == ["t"]


# -- the cluster's pool --------------------------------------------------------------------------


async def test_cluster_calls_wait_for_a_free_connection(opened: list[ThreadStore]) -> None:
    store = await ThreadStore.create(
        service_url("redis_cluster"), namespace=fresh_namespace(), pool_size=2, pool_timeout=30
    )
    opened.append(store)
    await asyncio.gather(*(store.save(Thread(id=f"t{n}", attributes={"k": 1})) for n in range(20)))
    pages, found = await asyncio.gather(
        asyncio.gather(*(store.list_recent() for _ in range(10))),
        store.find_by_attributes({"k": 1}),
    )
    assert all(len(page) == 20 for page in pages)
    assert len(found) == 20


async def test_cluster_call_fails_clearly_after_pool_timeout(opened: list[ThreadStore]) -> None:
    namespace = fresh_namespace()
    store = await ThreadStore.create(
        service_url("redis_cluster"), namespace=namespace, pool_size=1, pool_timeout=0.3
    )
    opened.append(store)
    backend = store.backend
    assert isinstance(backend, RedisBackend)
    # The only connection waits two seconds for a list nobody pushes to.
    blocker = asyncio.create_task(backend.client.execute_command("BLPOP", f"{namespace}:b", 2))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    with pytest.raises(BackendError, match="pool_timeout") as caught:
        await store.save(Thread(id="t"))
    waited = time.monotonic() - started
    assert 0.25 <= waited < 1.5, waited
    assert "MaxConnectionsError" in str(caught.value)
    await blocker
    await store.save(Thread(id="t"))  # the connection is free again
    assert await store.get("t") is not None
