"""Opening a namespace some of whose table names other tables already have: the store refuses
with an error that names them, creates nothing and leaves them alone; a creation that fails
half-way leaves nothing behind (MariaDB's DDL is not undone by the rollback)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import inspect, text

from tests.test_sql import dialect_url, drop_namespaces
from tyler_core.errors import StoreConnectionError
from tyler_core.models import Message, Thread
from tyler_core.store import ThreadStore
from tyler_core.testing.base import fresh_namespace
from tyler_sql import migrate
from tyler_sql.migrate import check_async, upgrade_async


@pytest.fixture(params=["postgres_asyncpg", "mariadb", "sqlite_file"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return dialect_url(request.param, tmp_path)


@pytest_asyncio.fixture(loop_scope="function")
async def namespace(url: str) -> AsyncIterator[str]:
    """A fresh namespace, whose schema and foreign tables are dropped afterwards."""
    name = fresh_namespace()
    yield name
    if not url.startswith("sqlite"):  # a file of the test's own
        await drop_namespaces(url, [name])
        await _execute(url, *(f"DROP TABLE IF EXISTS {name}_{t}" for t in ("messages", "threads")))


async def _execute(url: str, *statements: str) -> None:
    store = ThreadStore(url)  # not opened: its engine only
    try:
        async with store.engine.begin() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await store.close()


async def _tables(url: str, namespace: str) -> list[str]:
    store = ThreadStore(url)
    try:
        async with store.engine.connect() as connection:
            names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    finally:
        await store.close()
    return sorted(n for n in names if n.startswith(f"{namespace}_"))


async def _foreign_rows(url: str, table: str) -> list[tuple[object, ...]]:
    store = ThreadStore(url)
    try:
        async with store.engine.connect() as connection:
            result = await connection.execute(text(f"SELECT id, note FROM {table}"))
            return [tuple(row) for row in result]
    finally:
        await store.close()


async def _opens_and_saves(url: str, namespace: str) -> None:
    async with await ThreadStore.create(url, namespace=namespace) as store:
        thread = Thread()
        thread.add_message(Message(role="user", content="hello"))
        await store.save(thread)
        stored = await store.get(thread.id)
        assert stored is not None
        assert [m.content for m in stored.messages] == ["hello"]


@pytest.mark.parametrize("taken", ["messages", "threads"])
async def test_a_foreign_table_with_a_namespace_name_is_named_and_nothing_is_created(
    url: str, namespace: str, taken: str
) -> None:
    foreign = f"{namespace}_{taken}"
    await _execute(
        url,
        f"CREATE TABLE {foreign} (id INTEGER PRIMARY KEY, note VARCHAR(20))",
        f"INSERT INTO {foreign} (id, note) VALUES (7, 'mine')",
    )
    for _ in range(2):  # the first attempt leaves nothing that changes the second's answer
        with pytest.raises(StoreConnectionError, match=foreign) as raised:
            await ThreadStore.create(url, namespace=namespace)
        assert "do not belong to a tyler-threadstore schema" in str(raised.value)
        assert await _tables(url, namespace) == [foreign]
    assert await _foreign_rows(url, foreign) == [(7, "mine")]
    await _execute(url, f"DROP TABLE {foreign}")
    await _opens_and_saves(url, namespace)


async def test_migrate_names_a_foreign_table_instead_of_failing_on_it(
    url: str, namespace: str
) -> None:
    foreign = f"{namespace}_messages"
    await _execute(url, f"CREATE TABLE {foreign} (id INTEGER PRIMARY KEY, note VARCHAR(20))")
    current, report = await check_async(url, namespace=namespace)
    assert not current
    assert foreign in report
    assert "do not belong" in report
    with pytest.raises(StoreConnectionError, match=foreign):
        await upgrade_async(url, namespace=namespace)
    assert await _tables(url, namespace) == [foreign]


async def test_a_creation_that_fails_half_way_leaves_nothing_behind(
    url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After create_all has made every table: the full-text search DDL fails.
    monkeypatch.setattr(migrate, "create_search_ddl", lambda *_: ["CREATE TABLE broken ("])
    with pytest.raises(StoreConnectionError):
        await ThreadStore.create(url, namespace=namespace)
    assert await _tables(url, namespace) == []
    monkeypatch.undo()
    await _opens_and_saves(url, namespace)
