"""SQL servers killing the store's connections (``pg_terminate_backend``, MariaDB's ``KILL``),
and a PostgreSQL server restarted, while the store saves through its fast path
(:mod:`tyler_sql.fastwrite`: appends and new threads, whose connections skip the pool's ping when
the driver knows them open): a save may fail, but every save that returned is stored, the same
store answers again at once, and no connection leaks."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from tests.reliability.conftest import record
from tests.reliability.servers import OwnPostgres
from tests.reliability.test_sql_faults import kill_all, victim
from tests.services import service_url
from tyler_core.errors import BackendError, ConcurrencyError
from tyler_core.models import Message, Thread
from tyler_core.store import ThreadStore
from tyler_core.testing.base import fresh_namespace

ROUNDS = 40
#: What strikes during a round (its number given).
Fault = Callable[[int], Coroutine[Any, Any, None]]

__all__ = ["victim"]


class _Rounds:
    """Appends (through ``save``) to one thread and saves of new threads, one of each per round
    while a fault strikes; then checks that every acknowledged save is stored."""

    def __init__(self, store: ThreadStore) -> None:
        self.store = store
        self.outcomes = {"saved": 0, "save failed": 0}
        self.appended: list[str] = []
        self.created: list[str] = []

    async def _save(self, thread: Thread, acknowledged: list[str], key: str) -> None:
        try:
            await self.store.save(thread)
        except (BackendError, ConcurrencyError):
            self.outcomes["save failed"] += 1
        else:
            self.outcomes["saved"] += 1
            acknowledged.append(key)

    async def run(self, rounds: int, fault: Fault) -> dict[str, int]:
        store = self.store
        thread = await store.save(Thread(id="appended", attributes={"k": "v"}))
        for round_ in range(rounds):
            breaker = asyncio.create_task(fault(round_))
            message_id = f"a{round_}"
            thread.add_message(Message(id=message_id, role="user", content=f"round {round_}"))
            await self._save(thread, self.appended, message_id)
            new = Thread(id=f"new{round_}", attributes={"k": "v"})
            await self._save(new, self.created, new.id)
            await breaker
            reloaded = await store.get("appended")  # the same store answers, first time
            assert reloaded is not None
            thread = reloaded
        stored = [m.id for m in thread.messages]
        assert len(stored) == len(set(stored))
        sequences = [m.sequence for m in thread.messages]
        assert sequences == sorted(set(sequences))  # type: ignore[type-var]
        lost = [m for m in self.appended if m not in stored]
        lost += [t for t in self.created if await store.get(t) is None]
        assert lost == []
        found = {t.id for t in await store.find_by_attributes({"k": "v"})}
        assert set(self.created) <= found
        assert store.engine.pool.checkedout() == 0
        assert self.outcomes["saved"] > 0
        return {**self.outcomes, "acknowledged writes lost": len(lost)}


@pytest.mark.slow
async def test_killed_connections_during_fast_saves_lose_no_acknowledged_write(
    victim: tuple[str, ThreadStore, set[int]],
) -> None:
    name, store, ids = victim
    admin = ThreadStore(service_url("mysql" if name == "mariadb" else name))
    rng = random.Random(11)
    kills = 0

    async def kill_soon(_: int) -> None:
        nonlocal kills
        if rng.random() < 0.3:
            return
        await asyncio.sleep(rng.uniform(0, 0.01))
        kills += await kill_all(admin, name, ids)

    try:
        outcomes = await _Rounds(store).run(ROUNDS, kill_soon)
    finally:
        await admin.close()
    assert kills > 0
    record(
        "faults",
        f"{name} killed connections, fast saves",
        {"connections killed": kills, **outcomes},
    )


@pytest.mark.slow
async def test_postgres_restarted_during_fast_saves_keeps_every_acknowledged_write() -> None:
    service_url("postgres")  # skip (or fail in CI) where PostgreSQL is not installed here
    server = OwnPostgres()
    rng = random.Random(17)
    try:
        await server.init()
        store = await ThreadStore.create(server.url, namespace=fresh_namespace())

        async def fault(round_: int) -> None:
            if round_ % 4 != 1:
                return
            await asyncio.sleep(rng.uniform(0, 0.01))
            await server.restart()

        try:
            outcomes = await _Rounds(store).run(16, fault)
        finally:
            await store.close()
    finally:
        await server.destroy()
    assert server.restarts == 4
    record("faults", "postgres restarted, fast saves", {"restarts": server.restarts, **outcomes})
