"""``StorageBackend.storage_size`` and what ``tyler-store stats`` shows of it, on every backend
that can tell (all but memory): an empty namespace is small, a namespace holding a megabyte of
messages reports at least that much, and another namespace on the same server does not count."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.reliability.conftest import backend_url
from tests.test_cli import tyler_store
from tyler_core.models import Message, Thread
from tyler_core.store import ThreadStore
from tyler_core.testing.base import fresh_namespace

SIZED = ["sqlite", "postgres", "mariadb", "redis", "redis_cluster", "mongodb"]
PAYLOAD = 1_000_000  # bytes of message text saved into the measured namespace


async def _drop(store: ThreadStore) -> None:
    try:
        await store.backend.drop()
    finally:
        await store.close()


@pytest.mark.parametrize("name", SIZED)
async def test_size_grows_with_the_namespace_and_only_with_it(name: str, tmp_path: Path) -> None:
    url = backend_url(name, tmp_path)
    measured = await ThreadStore.create(url, namespace=fresh_namespace())
    other = await ThreadStore.create(url, namespace=fresh_namespace())
    try:
        await measured.save(Thread(title="empty"))
        empty = await measured.backend.storage_size()
        assert isinstance(empty, int)
        assert 0 <= empty < PAYLOAD // 4

        for number in range(PAYLOAD // 10_000):
            text = os.urandom(5_000).hex()  # incompressible: TOAST and InnoDB compress
            thread = Thread(title=f"t{number}")
            thread.add_message(Message(role="user", content=text))
            await other.save(thread.model_copy(deep=True))  # same data next door
            await measured.save(thread)
        full = await measured.backend.storage_size()
        assert isinstance(full, int)
        assert full >= PAYLOAD, (empty, full)
        # The neighbour's megabyte is not counted (a generous bound: indexes, pages, overhead).
        assert full < 3 * PAYLOAD + empty, (empty, full)
    finally:
        await _drop(measured)
        await _drop(other)


async def test_memory_cannot_tell() -> None:
    async with ThreadStore("memory://") as store:
        await store.save(Thread())
        assert await store.backend.storage_size() is None


def test_stats_shows_the_size(tmp_path: Path) -> None:
    env = {"TYLER_STORE_URL": f"sqlite+aiosqlite:///{tmp_path}/stats.db"}
    assert tyler_store("demo", cwd=tmp_path, env=env).returncode == 0
    stats = json.loads(tyler_store("stats", "--json", cwd=tmp_path, env=env).stdout)
    assert isinstance(stats["size_bytes"], int) and stats["size_bytes"] > 0
    table = tyler_store("stats", cwd=tmp_path, env=env)
    assert table.returncode == 0, table.stderr
    assert "size_bytes" in table.stdout and "KiB" in table.stdout
    unknown = tyler_store("stats", cwd=tmp_path, env={"TYLER_STORE_URL": "memory://"})
    assert "unknown (the backend cannot tell)" in unknown.stdout
