"""Issue 8's acceptance test for copying: 2,000 threads go SQLite → PostgreSQL → Redis →
MongoDB → SQLite with :func:`~tyler_core.transfer.copy_threads` and come back exactly as they
left, and a copy interrupted half-way and run again ends with the same result.

Slow (a few minutes on a busy two-core machine), hence the ``slow`` mark: each hop saves every
thread one by one and verifies by reading both stores whole, and the MongoDB test server is pure
Python, with a cost per command of several milliseconds and one per inserted document that
grows with the collection.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.services import service_url
from tyler_core import Attachment, Message, Thread, ThreadStore
from tyler_core.transfer import CopyReport, Progress, copy_threads, iterate_threads

THREADS = 2000
#: Threads of the interrupted copy.
INTERRUPTED_THREADS = 500
# The Mongo test server can be slow to answer when other tests keep it busy.
_PATIENT: dict[str, Any] = {"connect_timeout": 30, "serverSelectionTimeoutMS": 30_000}

pytestmark = pytest.mark.slow

_VALUES: list[Any] = [
    1,
    1.0,
    True,
    False,
    None,
    0,
    -(2**63),
    2**63 - 1,
    1e16,
    0.1,
    "1",
    "",
    "ünïcødé ✓ 👍",
    "line\nbreak",
    [1, "two", 3.5, None],
    {"nested": {"deeper": [True, {"k": "v"}]}},
    {"b": 2, "a": 1},
]
_SOURCES = ["slack", "github", "email", "discord"]
_EMOJI = ["👍", "🎉", "❤️", "👀"]


def make_threads(count: int, seed: int = 8) -> list[Thread]:
    """Small threads (1 to 3 messages) with varied attributes, sources, reactions, attachments,
    tool calls and timestamps, the same for the same seed."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    threads = []
    for index in range(count):
        created = start + timedelta(seconds=index * 37, microseconds=rng.randrange(1_000_000))
        attributes = {f"k{j}": rng.choice(_VALUES) for j in range(rng.randrange(4))}
        attributes["batch"] = index % 7
        source: dict[str, Any] | None = None
        if rng.random() < 0.8:
            source = {"name": rng.choice(_SOURCES), "channel": f"C{index % 13}"}
            if rng.random() < 0.5:
                source["thread_ts"] = f"{1718000000 + index}.{rng.randrange(10**6):06d}"
        thread = Thread(
            id=f"chain-{index:05d}-{rng.randrange(16**6):06x}",
            title=rng.choice([None, f"Thread {index}", "Ärger mit der Lieferung"]),
            attributes=attributes,
            source=source,
            created_at=created,
        )
        for position in range(rng.randrange(1, 4)):
            role = ["user", "assistant", "tool"][position % 3] if position else "user"
            message = Message(
                role=role,
                content=f"message {position} of thread {index}: {rng.random()!r}",
                tool_call_id="call_1" if role == "tool" else None,
                attributes={"score": rng.choice(_VALUES)} if rng.random() < 0.5 else {},
                timestamp=created + timedelta(seconds=position, microseconds=position),
            )
            if role == "assistant":
                message.tool_calls = [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "f", "arguments": "{}"},
                    }
                ]
                message.metrics = {"usage": {"prompt_tokens": index, "completion_tokens": 3}}
            if rng.random() < 0.2:
                message.attachments.append(
                    Attachment(
                        filename=f"file-{index}.png",
                        mime_type="image/png",
                        size=rng.randrange(1, 10**6),
                        storage_path=f"files/{index}.png",
                        status="stored",
                    )
                )
            thread.add_message(message)
            for user in range(rng.randrange(3)):
                thread.add_reaction(message.id, rng.choice(_EMOJI), f"user-{user}")
        # Versions above 1 and updated_at values independent of created_at: copies keep both.
        thread.version = rng.randrange(1, 5)
        thread.updated_at = created + timedelta(hours=rng.randrange(100), microseconds=index)
        threads.append(thread)
    return threads


async def contents(store: ThreadStore) -> list[str]:
    """Every thread of ``store`` as JSON, sorted by id: JSON keeps ``1``, ``1.0`` and ``true``
    apart and datetimes to the microsecond, so equal lists mean equal stores."""
    dumps = [t.model_dump_json() async for t in iterate_threads(store, batch=500)]
    return sorted(dumps)


def _namespace() -> str:
    return "chain_" + uuid.uuid4().hex[:12]


async def _dispose(store: ThreadStore) -> None:
    """Leave nothing behind on the server: drop the namespace with its data."""
    try:
        await store.backend.drop()
    finally:
        await store.close()


Opener = Callable[[str], Awaitable[ThreadStore]]


@pytest.fixture
async def opened() -> AsyncIterator[Opener]:
    """Opens stores for the test on fresh namespaces; purges and drops them afterwards."""
    stores: list[ThreadStore] = []

    async def open_store(url: str) -> ThreadStore:
        options = _PATIENT if url.startswith("mongodb") else {}
        store = await ThreadStore.create(url, namespace=_namespace(), **options)
        stores.append(store)
        return store

    yield open_store
    for store in reversed(stores):
        await _dispose(store)


async def _fill(store: ThreadStore, threads: list[Thread]) -> None:
    for thread in threads:
        await store.save(thread, preserve=True)


def _verified(report: CopyReport, copied: int) -> None:
    assert report.verified, report
    assert report.copied == copied and report.skipped == 0, report


async def _chain(opened: Opener, tmp_path: Path, count: int, servers: list[str]) -> None:
    """Copy ``count`` threads from a SQLite file through ``servers`` into another SQLite file;
    every hop must verify, and the last store must equal the first exactly."""
    original = make_threads(count)
    first = await opened(f"sqlite+aiosqlite:///{tmp_path}/first.db")
    await _fill(first, original)
    expected = await contents(first)
    assert len(expected) == count
    # What the first store holds is what was put in, not just what it made of it.
    assert sorted(t.model_dump_json() for t in original) == expected

    hops = [first, *[await opened(service_url(name)) for name in servers]]
    hops.append(await opened(f"sqlite+aiosqlite:///{tmp_path}/last.db"))
    for source, target in itertools.pairwise(hops):
        # Each target is new, so nothing can be skipped: overwrite spares a lookup per thread
        # (resuming is what the interrupted-copy test covers).
        _verified(await copy_threads(source, target, batch=250, overwrite=True), count)
    assert await contents(hops[-1]) == expected


async def test_two_thousand_threads_go_through_every_server_and_return_exactly(
    opened: Opener, tmp_path: Path
) -> None:
    await _chain(opened, tmp_path, THREADS, ["postgres", "redis", "mongodb"])


class _Interrupt(Exception):
    """Stops a copy half-way, as a crash or Ctrl-C would."""


async def test_an_interrupted_copy_run_again_gives_the_same_result(
    opened: Opener, tmp_path: Path
) -> None:
    source = await opened(f"sqlite+aiosqlite:///{tmp_path}/source.db")
    await _fill(source, make_threads(INTERRUPTED_THREADS, seed=9))
    target = await opened(service_url("postgres"))
    half = INTERRUPTED_THREADS // 2

    def stop_half_way(progress: Progress) -> None:
        if progress.threads == half:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        await copy_threads(source, target, on_progress=stop_half_way)
    assert await target.count() == half

    again = await copy_threads(source, target)
    assert again.verified, again
    assert (again.copied, again.skipped) == (INTERRUPTED_THREADS - half, half)
    assert await contents(target) == await contents(source)

    # A third run finds everything in place and copies nothing.
    third = await copy_threads(source, target)
    assert (third.copied, third.skipped, third.verified) == (0, INTERRUPTED_THREADS, True)
