"""The Redis list index: a page costs the page, and pages stay exact wherever an operation
stopped (after any of its three steps), across expiries, retried scripts, concurrent writers and
an index written by an older release."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.redis_support import CountingConnection
from tests.services import service_url
from tyler_core.errors import ConcurrencyError
from tyler_core.models import Message, Thread
from tyler_core.store import ThreadStore
from tyler_core.testing.base import fresh_namespace
from tyler_redis import layout, scripts
from tyler_redis.backend import RedisBackend

_START = datetime(2025, 6, 1, tzinfo=UTC)
_IDS = [f"t{n:02d}" for n in range(12)]
#: The list order of the threads `_fill` saves: newest first.
_ORDER = list(reversed(_IDS))


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


async def _fill(store: ThreadStore, ids: list[str] = _IDS, *, ttl: float | None = None) -> None:
    """Threads at fixed times, one minute apart in the order of ``ids``."""
    for number, thread_id in enumerate(ids):
        updated_at = _START + timedelta(minutes=number)
        thread = Thread(id=thread_id, title=thread_id, updated_at=updated_at)
        thread.add_message(Message(role="user", content="hi"))
        await store.save(thread, touch=False, ttl=ttl)


async def _assert_listed(store: ThreadStore, expected: list[str]) -> None:
    """Every way of listing gives ``expected``: pages of each size, every offset, count."""
    assert [t.id for t in await store.list_recent()] == expected
    for size in (1, 3, 5):
        paged: list[str] = []
        for offset in range(0, len(expected) + size, size):
            paged += [t.id for t in await store.list(limit=size, offset=offset)]
        assert paged == expected, f"pages of {size}"
    assert await store.count() == len(expected)


async def _assert_settled(store: ThreadStore, threads: int) -> None:
    """After a read with no grace: nothing pending, one list member per thread."""
    backend = _backend(store)
    client, keys = backend.client, backend._layout
    backend.stale_entry_grace = 0
    await store.list()
    assert await client.hlen(keys.pending_key) == 0
    assert await client.zcard(keys.list_key) == threads
    assert await client.hlen(keys.members_key) == threads


def _skip_next_settle(backend: RedisBackend, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the next operation stop after its thread script, as a crash would."""
    original = backend._settle
    skipped: list[int] = []

    def settle(*args: Any, **kwargs: Any) -> None:
        if not skipped:
            skipped.append(1)
            return
        original(*args, **kwargs)

    monkeypatch.setattr(backend, "_settle", settle)
    return skipped


# -- cost ----------------------------------------------------------------------------------------


async def test_a_page_costs_one_view_and_its_threads_at_any_offset() -> None:
    store = await ThreadStore.create(
        service_url("redis"), namespace=fresh_namespace(), connection_class=CountingConnection
    )
    try:
        await asyncio.gather(*(store.save(Thread(id=f"t{n:03d}")) for n in range(300)))
        await store.list(limit=1)
        backend = _backend(store)
        assert await backend.client.hlen(backend._layout.pending_key) == 0
        costs = []
        for offset in (0, 150, 280):
            CountingConnection.sent.clear()
            page = await store.list(limit=20, offset=offset)
            assert len(page) == 20
            costs.append(list(CountingConnection.sent))
        # The view, then the 20 threads in one pipeline: nothing for the members above.
        assert costs == [["EVALSHA"] * 21] * 3
        CountingConnection.sent.clear()
        assert await store.count() == 300
        assert CountingConnection.sent == ["EVALSHA"]
    finally:
        await store.backend.purge()
        await store.close()


# -- operations that stopped between their steps -------------------------------------------------


async def test_a_save_that_stopped_after_the_thread_script(
    store: ThreadStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _fill(store)
    moved = await store.get("t03")
    assert moved is not None
    _skip_next_settle(_backend(store), monkeypatch)
    moved.title = "moved to the top"
    await store.save(moved)  # the entry of its old place stays, and its pending token
    expected = ["t03", *(i for i in _ORDER if i != "t03")]
    await _assert_listed(store, expected)
    await _assert_settled(store, 12)
    await _assert_listed(store, expected)


async def test_an_append_that_stopped_after_the_thread_script(
    store: ThreadStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _fill(store)
    _skip_next_settle(_backend(store), monkeypatch)
    await store.append("t08", Message(role="user", content="again"))
    expected = ["t08", *(i for i in _ORDER if i != "t08")]
    await _assert_listed(store, expected)
    await _assert_settled(store, 12)


async def test_a_delete_that_stopped_after_the_thread_script(
    store: ThreadStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _fill(store)
    _skip_next_settle(_backend(store), monkeypatch)
    assert await store.delete("t05")
    expected = [i for i in _ORDER if i != "t05"]
    await _assert_listed(store, expected)
    await _assert_settled(store, 11)


async def test_saves_that_stopped_before_the_thread_script(store: ThreadStore) -> None:
    """Entries of a new state that was never written, for a stored thread and for a thread
    that does not exist, anywhere in the list."""
    await _fill(store)
    backend = _backend(store)
    for thread_id, minutes in (("t02", 100), ("t09", -100), ("ghost", 5), ("ghost2", 100)):
        prefix = layout.list_prefix(thread_id, _START + timedelta(minutes=minutes, seconds=30))
        await backend._begin(thread_id, prefix, [])
    await _assert_listed(store, _ORDER)
    await _assert_settled(store, 12)


async def test_a_save_retried_after_a_lost_reply_while_another_save_went_through(
    store: ThreadStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first attempt of a save is applied but its reply is lost; another store saves the
    thread again; the retry finds a newer version. The save raises, and nobody was told which
    entry the applied attempt replaced: the thread stays pending until a reader settles it."""
    await _fill(store)
    other = await ThreadStore.create(store.database_url, namespace=store.options.namespace)
    try:
        mine = await store.get("t04")
        assert mine is not None
        original = scripts.run
        raced: list[int] = []

        async def run(client: Any, script: scripts.Script, keys: Any, args: Any) -> Any:
            reply = await original(client, script, keys, args)
            if script in (scripts.WRITE, scripts.WRITE_AND_INDEX) and not raced:
                raced.append(1)
                theirs = await other.get("t04")
                assert theirs is not None
                theirs.title = "theirs"
                await other.save(theirs)
                reply = await original(client, script, keys, args)  # the retry
            return reply

        monkeypatch.setattr(scripts, "run", run)
        mine.title = "mine"
        with pytest.raises(ConcurrencyError):
            await store.save(mine)
        monkeypatch.setattr(scripts, "run", original)
        stored = await store.get("t04")
        assert stored is not None
        assert stored.title == "theirs"
        expected = ["t04", *(i for i in _ORDER if i != "t04")]
        await _assert_listed(store, expected)
        await _assert_settled(store, 12)
        await _assert_listed(store, expected)
    finally:
        await other.close()


# -- expiry ----------------------------------------------------------------------------------------


async def test_expired_threads_leave_the_pages_at_once(store: ThreadStore) -> None:
    await _fill(store)
    brief = await store.get("t06")
    assert brief is not None
    await store.save(brief, touch=False, ttl=0.3)
    lasting = await store.get("t07")
    assert lasting is not None
    await store.save(lasting, touch=False, ttl=3600)
    for _ in range(100):
        if await store.get("t06") is None:
            break
        await asyncio.sleep(0.05)
    await _assert_listed(store, [i for i in _ORDER if i != "t06"])
    backend = _backend(store)
    await _assert_settled(store, 11)
    # The expired thread's bound is gone; the lasting one's is about an hour ahead.
    bounds = dict(await backend.client.zrange(backend._layout.expiry_key, 0, -1, withscores=True))
    assert list(bounds) == [b"t07"]
    assert 3500 < bounds[b"t07"] / 1000 - time.time() <= 3600


async def test_saving_without_a_ttl_makes_a_thread_permanent_in_the_index(
    store: ThreadStore,
) -> None:
    await _fill(store, ttl=1.0)
    for thread_id in _IDS[:6]:
        thread = await store.get(thread_id)
        assert thread is not None
        await store.save(thread, touch=False)
    await asyncio.sleep(1.5)
    await _assert_listed(store, _ORDER[6:])
    await _assert_settled(store, 6)
    backend = _backend(store)
    assert await backend.client.zcard(backend._layout.expiry_key) == 0


# -- an index written by an older release ----------------------------------------------------------


async def test_an_index_without_members_and_pending_keys_is_upgraded(store: ThreadStore) -> None:
    await _fill(store)
    lasting = await store.get("t07")
    assert lasting is not None
    await store.save(lasting, touch=False, ttl=3600)
    backend = _backend(store)
    client, keys = backend.client, backend._layout
    # What an older release left: list members only, among them leftovers of crashed saves.
    old = time.time() - 3600
    token = f"{int(old):010d}{int(old % 1 * 1e6):06d}{secrets.token_hex(6)}".encode()
    for thread_id, minutes in (("t01", 200), ("gone", 3)):
        prefix = layout.list_prefix(thread_id, _START + timedelta(minutes=minutes, seconds=30))
        await client.zadd(keys.list_key, {prefix + token: 0})
    for key in (keys.members_key, keys.pending_key, keys.expiry_key, keys.format_key):
        await client.delete(key)

    await _assert_listed(store, _ORDER)
    assert await client.exists(keys.format_key) == 1
    await _assert_settled(store, 12)
    bounds = await client.zrange(keys.expiry_key, 0, -1)
    assert bounds == [b"t07"]
    await _assert_listed(store, _ORDER)


# -- concurrent writers ------------------------------------------------------------------------


async def test_pages_stay_exact_while_other_threads_are_saved_and_appended(
    store: ThreadStore,
) -> None:
    """Four threads are saved and appended to without pause, so they stay above forty quiet
    ones: every page of the quiet ones is exact, and each busy one is listed once."""
    quiet = [f"q{n:02d}" for n in range(40)]
    await _fill(store, quiet)
    busy = [f"busy{n}" for n in range(4)]
    stop = asyncio.Event()
    started = {thread_id: asyncio.Event() for thread_id in busy}

    async def write(thread_id: str) -> int:
        thread = Thread(id=thread_id)
        rounds = 0
        while not stop.is_set():
            thread.title = f"round {rounds}"
            await store.save(thread)
            started[thread_id].set()
            await store.append(thread_id, Message(role="user", content=str(rounds)))
            loaded = await store.get(thread_id)
            assert loaded is not None
            thread = loaded
            rounds += 1
        return rounds

    async def read(check: Callable[[], Awaitable[None]], until: float) -> int:
        reads = 0
        while time.monotonic() < until:
            await check()
            reads += 1
        return reads

    expected = list(reversed(quiet))

    async def quiet_pages() -> None:
        paged: list[str] = []
        for offset in range(4, 44, 7):
            paged += [t.id for t in await store.list(limit=7, offset=offset)]
        assert paged == expected

    async def busy_page() -> None:
        assert sorted(t.id for t in await store.list(limit=4)) == busy
        assert await store.count() == 44

    writers = [asyncio.create_task(write(thread_id)) for thread_id in busy]
    try:
        await asyncio.gather(*(event.wait() for event in started.values()))
        until = time.monotonic() + 3
        reads = await asyncio.gather(read(quiet_pages, until), read(busy_page, until))
    finally:
        stop.set()
        rounds = await asyncio.gather(*writers)
    assert min(reads) > 5
    assert min(rounds) > 5
    await _assert_settled(store, 44)


async def test_a_thread_saved_between_the_view_and_the_check_counts_once(
    store: ThreadStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pending thread is saved again by another store after every view a reader takes and
    before the reader checks it: the reader never sees the header it needs, counts the thread
    once all the same, and every other thread stays in place."""
    await _fill(store)
    backend = _backend(store)
    backend._one_step = False  # a save in three steps on a standalone server too
    pending = await store.get("t03")
    assert pending is not None
    _skip_next_settle(backend, monkeypatch)
    await store.save(pending)  # t03 on top, with its old entry and a pending token left
    other = await ThreadStore.create(store.database_url, namespace=store.options.namespace)
    try:
        original = type(backend._list)._check
        checks: list[int] = []

        async def check(self: Any, suspects: Any) -> Any:
            checks.append(len(suspects))
            thread = await other.get("t03")
            assert thread is not None
            await other.save(thread)
            return await original(self, suspects)

        monkeypatch.setattr(type(backend._list), "_check", check)
        expected = ["t03", *(i for i in _ORDER if i != "t03")]
        for offset, limit in ((0, 12), (0, 1), (1, 3), (4, 8), (11, 1)):
            checks.clear()
            page = [t.id for t in await store.list(limit=limit, offset=offset)]
            assert page == expected[offset : offset + limit]
            assert len(checks) > 1  # it took another view, and then a stand-in
        assert await store.count() == 12
    finally:
        await other.close()
