"""Faults the tests cause themselves, during a running workload: the MongoDB server's sockets
closed under the store (through a proxy that cuts every connection), and a Redis server of our
own restarted on its port and data directory. Afterwards the same store works again, every
thread is one whole version, and every write that returned is there."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.reliability.conftest import drop_mongo_collections, record
from tests.reliability.servers import CuttableProxy, OwnPostgres, OwnRedis
from tests.services import service_url
from tyler_core.errors import BackendError, ConcurrencyError
from tyler_core.models import Message, Thread
from tyler_core.store import ThreadStore
from tyler_core.testing.base import fresh_namespace


def _stamp(thread: Thread, round_: int) -> None:
    thread.title = f"round {round_}"
    thread.attributes["round"] = round_
    for number, message in enumerate(thread.messages):
        message.content = f"round {round_} #{number}"


def _round(thread: Thread, size: int) -> int:
    """The round a stored thread is at; fails if its parts come from different saves."""
    round_ = int(thread.attributes["round"])
    assert thread.title == f"round {round_}"
    assert [m.content for m in thread.messages] == [f"round {round_} #{n}" for n in range(size)]
    sequences = [m.sequence for m in thread.messages]
    assert sequences == sorted(set(sequences))  # type: ignore[type-var]
    return round_


async def _rounds(
    store: ThreadStore, *, size: int, rounds: int, fault: Callable[[int], Coroutine[Any, Any, None]]
) -> dict[str, int]:
    """Save a stamped thread and append to a log each round while ``fault(round)`` runs; check
    after each round that the same store reads one whole version; return the outcomes."""
    thread = Thread(id="victim", attributes={"round": 0})
    for _ in range(size):
        thread.add_message(Message(role="user", content=""))
    _stamp(thread, 0)
    await store.save(thread)
    await store.save(Thread(id="log"))
    outcomes = {"saved": 0, "save failed": 0, "appended": 0, "append failed": 0}
    acknowledged: list[str] = []
    previous = 0
    for round_ in range(1, rounds + 1):
        _stamp(thread, round_)
        breaker = asyncio.create_task(fault(round_))
        try:
            await store.save(thread)
            outcomes["saved"] += 1
        except (BackendError, ConcurrencyError):
            outcomes["save failed"] += 1
        try:
            await store.append("log", Message(id=f"a{round_}", role="user", content="x"))
            acknowledged.append(f"a{round_}")
            outcomes["appended"] += 1
        except BackendError:
            outcomes["append failed"] += 1
        await breaker
        reloaded = await store.get("victim")  # the same store works again, first time
        assert reloaded is not None
        at = _round(reloaded, size)
        assert at in (previous, round_)
        previous = at
        assert [t.id for t in await store.find_by_attributes({"round": at})] == ["victim"]
        thread = reloaded
    log = await store.get("log")
    assert log is not None
    stored = [m.id for m in log.messages]
    assert len(stored) == len(set(stored))
    outcomes["acknowledged writes"] = outcomes["saved"] + outcomes["appended"]
    outcomes["acknowledged writes lost"] = len([m for m in acknowledged if m not in stored])
    outcomes["operations"] = rounds * 2
    return outcomes


@pytest.mark.slow
async def test_mongo_sockets_closed_mid_write_leave_old_or_new_threads() -> None:
    target = urlsplit(service_url("mongodb"))
    proxy = CuttableProxy(target.hostname or "127.0.0.1", target.port or 27017)
    await proxy.start()
    rng = random.Random(5)
    namespace = fresh_namespace()
    url = f"mongodb://127.0.0.1:{proxy.port}/tyler?directConnection=true"
    store = await ThreadStore.create(url, namespace=namespace, transactions="off")
    cut = 0

    async def fault(_: int) -> None:
        nonlocal cut
        if rng.random() < 0.3:
            return  # some rounds go through untouched
        await asyncio.sleep(rng.uniform(0, 0.03))
        cut += proxy.cut()

    try:
        outcomes = await _rounds(store, size=10, rounds=15, fault=fault)
    finally:
        await store.backend.drop()
        await store.close()
        await proxy.close()
        await drop_mongo_collections(service_url("mongodb"), [namespace])
    assert cut > 0
    assert outcomes["saved"] > 0
    assert outcomes["acknowledged writes lost"] == 0
    record("faults", "mongodb sockets closed", {"connections closed": cut, **outcomes})


@pytest.mark.slow
async def test_redis_restarted_mid_workload_keeps_every_acknowledged_write(
    tmp_path: Path,
) -> None:
    service_url("redis")  # skip (or fail in CI) where the test Redis is missing
    server = OwnRedis(tmp_path)
    await server.start()
    rng = random.Random(9)
    store = await ThreadStore.create(
        f"redis://127.0.0.1:{server.port}/0", namespace=fresh_namespace()
    )

    async def fault(round_: int) -> None:
        if round_ % 3:
            return
        await asyncio.sleep(rng.uniform(0, 0.01))
        await server.restart()

    try:
        outcomes = await _rounds(store, size=30, rounds=12, fault=fault)
    finally:
        await store.close()
        await server.stop()
    assert server.restarts == 4
    assert outcomes["saved"] > 0
    assert outcomes["acknowledged writes lost"] == 0
    figures: dict[str, Any] = {"server restarts": server.restarts, **outcomes}
    record("faults", "redis restarted", figures)


@pytest.mark.slow
async def test_postgres_restarted_mid_workload_keeps_every_acknowledged_write() -> None:
    service_url("postgres")  # skip (or fail in CI) where PostgreSQL is not installed here
    server = OwnPostgres()
    rng = random.Random(13)
    try:
        await server.init()
        store = await ThreadStore.create(server.url, namespace=fresh_namespace())

        async def fault(round_: int) -> None:
            if round_ % 3:
                return
            await asyncio.sleep(rng.uniform(0, 0.01))
            await server.restart()

        try:
            outcomes = await _rounds(store, size=30, rounds=12, fault=fault)
        finally:
            await store.close()
    finally:
        await server.destroy()
    assert server.restarts == 4
    assert outcomes["saved"] > 0
    assert outcomes["acknowledged writes lost"] == 0
    figures: dict[str, Any] = {"server restarts (immediate stop)": server.restarts, **outcomes}
    record("faults", "postgres restarted", figures)
