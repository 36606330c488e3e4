"""SQL schema migrations on PostgreSQL, MariaDB and SQLite: a database at an earlier revision
(r0001, r0002), holding data, is refused by ``create()`` with the command that upgrades it; the
upgrade brings it to the newest revision with its data usable; Alembic's autogenerate then finds
no difference from the models, and neither does it on a schema that ``create()`` made from
nothing."""

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
from sqlalchemy import Connection, insert, select

from tests.services import service_url
from tests.test_sql import drop_namespaces
from tyler_core.errors import StoreConnectionError
from tyler_core.jsonvalues import canonical_json
from tyler_core.models import Thread
from tyler_core.store import ThreadStore
from tyler_core.testing.base import fresh_namespace
from tyler_sql.backend import SQLBackend
from tyler_sql.migrate import alembic_config, check, check_async, head_revision, upgrade
from tyler_sql.rows import SOURCE, key_digest, key_rows
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


def _upgrade_to(connection: Connection, namespace: str, revision: str) -> None:
    command.upgrade(alembic_config(namespace, connection), revision)


def _insert_old_data(connection: Connection, namespace: str, revision: str) -> None:
    """A thread with an attachment and reactions as the release at ``revision`` wrote it."""
    tables = build_tables(namespace)
    now = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    attributes = {"team": "blue", "n": 1}
    source = {"name": "slack", "channel": "C9"}
    connection.execute(
        insert(tables.threads),
        {
            "id": "old",
            "title": "from an earlier release",
            "created_at": now,
            "updated_at": now,
            "attributes": attributes,
            "source": source,
            "version": 3,
        },
    )
    message: dict[str, Any] = {
        "thread_id": "old",
        "id": "m1",
        "sequence": 1,
        "role": "user",
        "content": [{"type": "text", "text": "Migrations preserve everything"}],
        "attributes": {},
        "timestamp": now,
        "metrics": {},
    }
    if revision != "r0001":
        message["search_words"] = "everything migrations preserve"
    connection.execute(insert(tables.messages), message)
    connection.execute(
        insert(tables.files),
        {
            "thread_id": "old",
            "message_id": "m1",
            "position": 0,
            "filename": "notes.txt",
            "status": "stored",
            "attributes": {},
        },
    )
    connection.execute(
        insert(tables.reactions),
        [
            {"thread_id": "old", "message_id": "m1", "position": p, "emoji": e, "user_id": u}
            for p, (e, u) in enumerate([("+1", "ann"), ("+1", "bob"), ("eyes", "cy")])
        ],
    )
    if revision != "r0001":
        # r0002 digested every key, source properties included, by (kind, key, value) alone.
        keys = key_rows("old", attributes, None) + [
            {
                "thread_id": "old",
                "digest": key_digest(SOURCE, key, value),
                "kind": SOURCE,
                "key": key,
                "value": canonical_json(value),
            }
            for key, value in source.items()
        ]
        connection.execute(insert(tables.keys), keys)


def _counts(connection: Connection, namespace: str) -> list[tuple[int, int]]:
    messages = build_tables(namespace).messages
    query = select(messages.c.attachment_count, messages.c.reaction_count)
    return [(row[0], row[1]) for row in connection.execute(query)]


@pytest.mark.parametrize("revision", ["r0001", "r0002"])
async def test_an_old_schema_is_refused_then_upgraded_and_matches_the_models(
    backend: SQLBackend, db_url: str, revision: str
) -> None:
    namespace = backend._tables.namespace
    async with backend.writer() as connection:
        await connection.run_sync(_upgrade_to, namespace, revision)
        await connection.run_sync(_insert_old_data, namespace, revision)
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
    assert revision in report

    # The blocking entry point the command line calls, from a thread as a CLI would run it.
    await asyncio.to_thread(upgrade, db_url, namespace=namespace)
    assert await asyncio.to_thread(check, db_url, namespace=namespace) == (
        True,
        report_for(db_url, namespace),
    )
    async with backend.reader() as connection:
        assert await connection.run_sync(_differences, namespace) == []
        assert await connection.run_sync(_counts, namespace) == [(1, 3)]

    async with await ThreadStore.create(db_url, namespace=namespace) as store:
        thread = await store.get("old")
        assert thread is not None
        assert thread.version == 3
        assert thread.incarnation is None  # an old row: checked by version only
        assert thread.messages[0].content == [
            {"type": "text", "text": "Migrations preserve everything"}
        ]
        assert [a.filename for a in thread.messages[0].attachments] == ["notes.txt"]
        assert thread.messages[0].reactions == {"+1": ["ann", "bob"], "eyes": ["cy"]}
        assert [t.id for t in await store.find_by_attributes({"team": "blue", "n": 1.0})] == ["old"]
        assert [t.id for t in await store.find_by_source("slack", {"channel": "C9"})] == ["old"]
        assert [t.id for t in await store.find_by_source("slack")] == ["old"]
        assert await store.find_by_source("teams", {"channel": "C9"}) == []
        assert (await store.search_threads("preserve MIGRATIONS"))[1] == 1
        thread.title = "saved after the upgrade"
        await store.save(thread)
        assert thread.version == 4
        stored = await store.get("old")
        assert stored is not None and stored.title == "saved after the upgrade"
        assert stored.incarnation is None  # an update keeps the stored token


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


def _source_digests(connection: Connection, namespace: str) -> dict[str, str]:
    keys = build_tables(namespace).keys
    query = select(keys.c.key, keys.c.digest).where(keys.c.kind == SOURCE)
    return {row[0]: row[1] for row in connection.execute(query)}


async def test_downgrading_to_r0002_restores_its_source_digests(
    backend: SQLBackend, db_url: str
) -> None:
    namespace = backend._tables.namespace
    async with await ThreadStore.create(db_url, namespace=namespace) as store:
        source = {"name": "slack", "channel": "C1"}
        await store.save(Thread(id="t", source=source))
    r0002 = {key: key_digest(SOURCE, key, value) for key, value in source.items()}
    async with backend.writer() as connection:
        assert await connection.run_sync(_source_digests, namespace) != r0002
        await connection.run_sync(
            lambda c: command.downgrade(alembic_config(namespace, c), "r0002")
        )
        assert await connection.run_sync(_source_digests, namespace) == r0002
    await asyncio.to_thread(upgrade, db_url, namespace=namespace)
    async with await ThreadStore.create(db_url, namespace=namespace) as store:
        assert [t.id for t in await store.find_by_source("slack", {"channel": "C1"})] == ["t"]
