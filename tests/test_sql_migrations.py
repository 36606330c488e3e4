"""SQL schema migrations on PostgreSQL, MariaDB and SQLite: a database at the first revision,
holding data, is refused by ``create()`` with the command that upgrades it; the upgrade brings it
to the newest revision with its data usable; Alembic's autogenerate then finds no difference
from the models, and neither does it on a schema that ``create()`` made from nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, insert

from tests.services import service_url
from tests.test_sql import drop_namespaces
from tyler_core.errors import StoreConnectionError
from tyler_core.store import ThreadStore
from tyler_core.testing.base import fresh_namespace
from tyler_sql.backend import SQLBackend
from tyler_sql.migrate import alembic_config, check, check_async, head_revision, upgrade
from tyler_sql.schema import build_tables, include_name


@pytest.fixture(params=["postgres", "mariadb", "sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One URL per database, with a password where the server ignores it (masking shows)."""
    if request.param == "postgres":
        # The test server trusts local connections, so any password works and must be masked.
        return service_url("postgres").replace("postgres@", "postgres:s3cr3tpw@")
    if request.param == "mariadb":
        return service_url("mysql")
    return f"sqlite+aiosqlite:///{tmp_path / 'migrations.db'}"


@pytest_asyncio.fixture(loop_scope="function")
async def backend(db_url: str) -> AsyncIterator[SQLBackend]:
    """A backend on a fresh namespace (not opened), whose tables are dropped afterwards."""
    store = ThreadStore(db_url, namespace=fresh_namespace())
    sql = store.backend
    assert isinstance(sql, SQLBackend)
    try:
        yield sql
    finally:
        await store.close()
        if "sqlite" not in db_url:
            await drop_namespaces(db_url, [store.options.namespace])


def _differences(connection: Connection, namespace: str) -> list[Any]:
    tables = build_tables(namespace)
    context = MigrationContext.configure(
        connection,
        opts={"include_name": include_name(namespace), "version_table": tables.version_table},
    )
    return list(compare_metadata(context, tables.metadata))


def _upgrade_to_first_revision(connection: Connection, namespace: str) -> None:
    command.upgrade(alembic_config(namespace, connection), "r0001")


def _insert_old_data(connection: Connection, namespace: str) -> None:
    tables = build_tables(namespace)
    now = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    connection.execute(
        insert(tables.threads),
        {
            "id": "old",
            "title": "from the first release",
            "created_at": now,
            "updated_at": now,
            "attributes": {"team": "blue", "n": 1},
            "source": {"name": "slack", "channel": "C9"},
            "version": 3,
        },
    )
    message = {
        "thread_id": "old",
        "id": "m1",
        "sequence": 1,
        "role": "user",
        "content": [{"type": "text", "text": "Migrations preserve everything"}],
        "attributes": {},
        "timestamp": now,
        "metrics": {},
    }
    connection.execute(insert(tables.messages), message)


async def test_an_old_schema_is_refused_then_upgraded_and_matches_the_models(
    backend: SQLBackend, db_url: str
) -> None:
    namespace = backend._tables.namespace
    async with backend.writer() as connection:
        await connection.run_sync(_upgrade_to_first_revision, namespace)
        await connection.run_sync(_insert_old_data, namespace)
    async with backend.reader() as connection:
        assert await connection.run_sync(_differences, namespace) != []

    with pytest.raises(StoreConnectionError) as refused:
        await ThreadStore.create(db_url, namespace=namespace)
    message = str(refused.value)
    assert "tyler-store migrate " in message
    assert f"namespace={namespace}" in message
    assert "s3cr3tpw" not in message
    current, report = await check_async(db_url, namespace=namespace)
    assert not current
    assert "r0001" in report

    # The blocking entry point the command line calls, from a thread as a CLI would run it.
    await asyncio.to_thread(upgrade, db_url, namespace=namespace)
    assert await asyncio.to_thread(check, db_url, namespace=namespace) == (
        True,
        report_for(db_url, namespace),
    )
    async with backend.reader() as connection:
        assert await connection.run_sync(_differences, namespace) == []

    async with await ThreadStore.create(db_url, namespace=namespace) as store:
        thread = await store.get("old")
        assert thread is not None
        assert thread.version == 3
        assert thread.messages[0].content == [
            {"type": "text", "text": "Migrations preserve everything"}
        ]
        assert [t.id for t in await store.find_by_attributes({"team": "blue", "n": 1.0})] == ["old"]
        assert [t.id for t in await store.find_by_source("slack", {"channel": "C9"})] == ["old"]
        assert (await store.search_threads("preserve MIGRATIONS"))[1] == 1


def report_for(url: str, namespace: str) -> str:
    """What :func:`check` says about a current schema."""
    from tyler_core.urls import mask_url

    return f"namespace {namespace!r} at {mask_url(url)} is up to date (revision {head_revision()})"


async def test_a_schema_created_from_nothing_matches_the_models(backend: SQLBackend) -> None:
    namespace = backend._tables.namespace
    await backend.open()
    async with backend.reader() as connection:
        assert await connection.run_sync(_differences, namespace) == []
        revision = await connection.run_sync(
            lambda c: MigrationContext.configure(
                c, opts={"version_table": f"{namespace}_alembic_version"}
            ).get_current_revision()
        )
    assert revision == head_revision()


async def test_a_schema_newer_than_the_package_is_refused(backend: SQLBackend, db_url: str) -> None:
    namespace = backend._tables.namespace
    await backend.open()
    async with backend.writer() as connection:
        await connection.exec_driver_sql(
            f"UPDATE {namespace}_alembic_version SET version_num = 'r9999'"
        )
    with pytest.raises(StoreConnectionError, match="upgrade the package"):
        await ThreadStore.create(db_url, namespace=namespace)
    async with backend.writer() as connection:  # back to a revision the teardown knows
        await connection.exec_driver_sql(
            f"UPDATE {namespace}_alembic_version SET version_num = '{head_revision()}'"
        )


async def test_migrating_an_empty_database_creates_the_current_schema(
    backend: SQLBackend, db_url: str
) -> None:
    namespace = backend._tables.namespace
    current, report = await check_async(db_url, namespace=namespace)
    assert not current
    assert "no schema yet" in report
    await asyncio.to_thread(upgrade, f"{db_url}?namespace={namespace}")
    assert (await check_async(db_url, namespace=namespace))[0]
    async with backend.reader() as connection:
        assert await connection.run_sync(_differences, namespace) == []


async def test_migrating_an_unreachable_server_fails_with_the_password_masked() -> None:
    service_url("postgres")
    url = "postgresql://postgres:s3cr3tpw@127.0.0.1:1/test"
    with pytest.raises(StoreConnectionError) as caught:
        await asyncio.to_thread(upgrade, url)
    assert "s3cr3tpw" not in str(caught.value)
    assert "postgres:***@" in str(caught.value)
