"""Concurrency soak: many tasks on two store instances mixing saves, appends, deletes, lists and
lookups on a few overlapping threads, then invariants: no acknowledged write lost or doubled,
sequences unique and increasing, lookups agreeing with the data."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.reliability.conftest import OpenStore
from tyler_core.errors import ConcurrencyError, ThreadNotFoundError
from tyler_core.models import Message, Thread
from tyler_core.store import ThreadStore

THREADS = [f"soak-{number}" for number in range(10)]
TASKS = 8
# Operations per task: fixed counts, not a duration, so every run does the same amount of work.
# The mongoeco server is pure Python (milliseconds per write) and the cluster client slower.
OPERATIONS = {"mongodb": 25, "redis_cluster": 40}
DEFAULT_OPERATIONS = 60


@dataclass
class Ledger:
    """What the workers were told succeeded, stamped with a logical clock."""

    clock: itertools.count[int] = field(default_factory=itertools.count)
    # message id -> (thread id, sequence the store returned, clock when the write was issued)
    acknowledged: dict[str, tuple[str, int | None, int]] = field(default_factory=dict)
    # thread id -> clock values at which a delete of it returned True
    deleted: dict[str, list[int]] = field(default_factory=dict)
    figures: Counter[str] = field(default_factory=Counter)

    def excused(self, thread_id: str, issued: int) -> bool:
        """Whether a delete of the thread finished after the write was issued (so the write may
        legitimately be gone)."""
        return any(done > issued for done in self.deleted.get(thread_id, []))


def _fresh(thread_id: str, rng: random.Random) -> Thread:
    return Thread(
        id=thread_id,
        title=thread_id,
        attributes={"group": rng.randrange(3), "gen": 0},
        source={"name": "soak", "k": rng.randrange(2)},
    )


def _check_whole(thread: Thread) -> None:
    sequences = [m.sequence for m in thread.messages]
    assert all(s is not None for s in sequences), thread.id
    assert sequences == sorted(set(sequences)), (thread.id, sequences)  # type: ignore[type-var]
    assert len({m.id for m in thread.messages}) == len(thread.messages), thread.id


async def _save(
    store: ThreadStore, ledger: Ledger, rng: random.Random, name: str, kept: dict[str, Thread]
) -> None:
    """Load-modify-save, retrying on conflicts (a bounded number of times). A missing thread is
    created again under its id; now and then the worker saves an object it loaded earlier
    (perhaps of a thread since deleted and created again), which must either be current or be
    refused."""
    thread_id = rng.choice(THREADS)
    for attempt in range(8):
        issued = next(ledger.clock)
        old = kept.pop(thread_id, None)
        if attempt == 0 and old is not None and rng.random() < 0.3:
            thread: Thread | None = old
            ledger.figures["saves of kept objects"] += 1
        else:
            thread = await store.get(thread_id)
        if thread is None:
            thread = _fresh(thread_id, rng)
            ledger.figures["threads created again"] += 1
        thread.attributes["group"] = rng.randrange(3)
        thread.attributes["gen"] = int(thread.attributes.get("gen", 0)) + 1
        thread.source = {"name": "soak", "k": rng.randrange(2)}
        thread.add_message(Message(id=name, role="assistant", content=f"saved {name}"))
        try:
            await store.save(thread)
        except ConcurrencyError:
            ledger.figures["conflicts"] += 1
            continue
        kept[thread_id] = thread
        sequence = thread.messages[-1].sequence
        ledger.acknowledged[name] = (thread_id, sequence, issued)
        ledger.figures["acknowledged saves"] += 1
        return
    ledger.figures["saves given up"] += 1


async def _append(store: ThreadStore, ledger: Ledger, rng: random.Random, name: str) -> None:
    thread_id = rng.choice(THREADS)
    issued = next(ledger.clock)
    try:
        added = await store.append(thread_id, Message(id=name, role="user", content=name))
    except ThreadNotFoundError:
        ledger.figures["appends to deleted threads"] += 1
        return
    ledger.acknowledged[name] = (thread_id, added[0].sequence, issued)
    ledger.figures["acknowledged appends"] += 1


async def _delete(store: ThreadStore, ledger: Ledger, rng: random.Random) -> None:
    thread_id = rng.choice(THREADS)
    if await store.delete(thread_id):
        ledger.deleted.setdefault(thread_id, []).append(next(ledger.clock))
        ledger.figures["deletes"] += 1


async def _read(store: ThreadStore, rng: random.Random) -> None:
    choice = rng.randrange(4)
    if choice == 0:
        threads = await store.list(limit=rng.randrange(1, 10))
    elif choice == 1:
        threads = await store.find_by_attributes({"group": rng.randrange(3)})
    elif choice == 2:
        threads = await store.find_by_source("soak", {"k": rng.randrange(2)})
    else:
        thread = await store.get(rng.choice(THREADS))
        threads = [thread] if thread else []
    for thread in threads:
        _check_whole(thread)  # a reader never sees a half-written thread


async def _worker(
    number: int, store: ThreadStore, ledger: Ledger, operations: int, seed: int
) -> None:
    rng = random.Random(seed * 100 + number)
    kept: dict[str, Thread] = {}  # objects this worker saved, reused now and then
    for step in range(operations):
        name = f"w{number}-{step}"
        roll = rng.random()
        if roll < 0.35:
            await _append(store, ledger, rng, name)
        elif roll < 0.60:
            await _save(store, ledger, rng, name, kept)
        elif roll < 0.62:
            await _delete(store, ledger, rng)
        else:
            await _read(store, rng)
        ledger.figures["operations"] += 1


async def _check_invariants(stores: list[ThreadStore], ledger: Ledger) -> int:
    """Assert the invariants; return how many acknowledged writes are missing (asserted 0)."""
    first, second = stores
    everything = await first.list_recent()
    assert [t.id for t in everything] == [t.id for t in await second.list_recent()]
    assert await first.count() == len(everything) == await second.count()
    by_id = {thread.id: thread for thread in everything}
    where: dict[str, list[str]] = {}
    for thread in everything:
        _check_whole(thread)
        other = await second.get(thread.id)
        assert other is not None
        assert other.model_dump() == thread.model_dump()
        for message in thread.messages:
            where.setdefault(message.id, []).append(thread.id)

    lost = 0
    for name, (thread_id, sequence, issued) in ledger.acknowledged.items():
        places = where.get(name, [])
        assert len(places) <= 1, f"{name} is stored {len(places)} times"
        if ledger.excused(thread_id, issued):
            continue
        if places != [thread_id]:
            lost += 1
            continue
        stored = by_id[thread_id].get_message_by_id(name)
        assert stored is not None
        assert stored.sequence == sequence, name

    # The lookups agree with filtering the full list by hand, in the same order.
    for store in stores:
        for group in range(3):
            found = await store.find_by_attributes({"group": group})
            wanted = [t.id for t in everything if t.attributes.get("group") == group]
            assert [t.id for t in found] == wanted
        for k in range(2):
            found = await store.find_by_source("soak", {"k": k})
            wanted = [t.id for t in everything if (t.source or {}).get("k") == k]
            assert [t.id for t in found] == wanted
        assert await store.find_by_source("other") == []
    return lost


@pytest.mark.slow
async def test_concurrent_writers_lose_nothing(
    open_store: OpenStore, backend_name: str, results: Any
) -> None:
    first = await open_store()
    second = await open_store(first.options.namespace)
    stores = [first, second]
    seed = 7
    rng = random.Random(seed)
    for thread_id in THREADS:
        await first.save(_fresh(thread_id, rng))
    ledger = Ledger()
    operations = OPERATIONS.get(backend_name, DEFAULT_OPERATIONS)
    await asyncio.gather(
        *(_worker(number, stores[number % 2], ledger, operations, seed) for number in range(TASKS))
    )
    lost = await _check_invariants(stores, ledger)
    figures: dict[str, Any] = dict(sorted(ledger.figures.items()))
    figures["acknowledged writes lost"] = lost
    results("soak", backend_name, figures)
    assert ledger.figures["operations"] == TASKS * operations
    assert ledger.figures["acknowledged appends"] > 0
    assert ledger.figures["acknowledged saves"] > 0
    assert lost == 0
