"""Least privilege on PostgreSQL and MariaDB: the schema is created by ``tyler-store migrate``
under the owner role; a role that may only SELECT/INSERT/UPDATE/DELETE the existing tables then
uses the store fully, and opening it sends no DDL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event, text

from tests.services import service_url
from tyler_core import cli
from tyler_core.models import Message, Thread
from tyler_core.store import ThreadStore
from tyler_core.testing.base import fresh_namespace

_DDL = ("CREATE", "ALTER", "DROP", "TRUNCATE", "GRANT", "COMMENT")


async def _grant_postgres(owner: ThreadStore, namespace: str, role: str) -> None:
    async with owner.engine.begin() as connection:
        tables = (
            (
                await connection.execute(
                    text("SELECT tablename FROM pg_tables WHERE tablename LIKE :prefix"),
                    {"prefix": f"{namespace}%"},
                )
            )
            .scalars()
            .all()
        )
        sequences = (
            (
                await connection.execute(
                    text("SELECT relname FROM pg_class WHERE relkind = 'S' AND relname LIKE :p"),
                    {"p": f"{namespace}%"},
                )
            )
            .scalars()
            .all()
        )
        assert tables
        await connection.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        await connection.execute(text(f'GRANT USAGE ON SCHEMA public TO "{role}"'))
        for table in tables:
            await connection.execute(
                text(f'GRANT SELECT, INSERT, UPDATE, DELETE ON "{table}" TO "{role}"')
            )
        for sequence in sequences:
            await connection.execute(text(f'GRANT USAGE, SELECT ON "{sequence}" TO "{role}"'))


async def _grant_mariadb(owner: ThreadStore, namespace: str, role: str) -> None:
    async with owner.engine.begin() as connection:
        database = (await connection.execute(text("SELECT DATABASE()"))).scalar_one()
        tables = (
            (
                await connection.execute(
                    text(
                        "SELECT table_name FROM information_schema.tables "
                        "WHERE table_schema = DATABASE() AND table_name LIKE :prefix"
                    ),
                    {"prefix": f"{namespace}%"},
                )
            )
            .scalars()
            .all()
        )
        assert tables
        await connection.execute(text(f"CREATE USER '{role}'@'%'"))
        for table in tables:
            await connection.execute(
                text(
                    "GRANT SELECT, INSERT, UPDATE, DELETE "
                    f"ON `{database}`.`{table}` TO '{role}'@'%'"
                )
            )


async def _drop_role(owner: ThreadStore, service: str, role: str) -> None:
    async with owner.engine.begin() as connection:
        if service == "postgres":
            await connection.execute(text(f'DROP OWNED BY "{role}"'))
            await connection.execute(text(f'DROP ROLE "{role}"'))
        else:
            await connection.execute(text(f"DROP USER IF EXISTS '{role}'@'%'"))


@pytest.fixture(params=["postgres", "mysql"])
async def migrated(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str]]:
    """A namespace migrated by the owner through the CLI, and a role limited to DML on its
    tables; both removed afterwards. Yields (url of the limited role, namespace)."""
    service = str(request.param)
    owner_url = service_url(service)
    namespace = fresh_namespace()
    role = f"tyler_dml_{uuid.uuid4().hex[:8]}"
    # The CLI blocks on its own event loop: run it in a thread.
    status = await asyncio.to_thread(cli.main, ["--namespace", namespace, "migrate", owner_url])
    assert status == 0
    owner = ThreadStore(owner_url)
    grant = _grant_postgres if service == "postgres" else _grant_mariadb
    await grant(owner, namespace, role)
    user = "postgres@" if service == "postgres" else "root@"
    limited_url = owner_url.replace(user, f"{role}@", 1)
    try:
        yield limited_url, namespace
    finally:
        cleaner = await ThreadStore.create(owner_url, namespace=namespace)
        await cleaner.backend.drop()
        await cleaner.close()
        await _drop_role(owner, service, role)
        await owner.close()


async def test_a_dml_only_role_uses_a_migrated_store_without_ddl(
    migrated: tuple[str, str],
) -> None:
    url, namespace = migrated
    statements: list[str] = []

    def remember(*args: Any) -> None:
        statements.append(str(args[2]))

    store = ThreadStore(url, namespace=namespace)
    event.listen(store.engine.sync_engine, "before_cursor_execute", remember)
    try:
        await store.initialize()
        assert statements  # the check of the schema ran, through this listener
        ddl = [s for s in statements if s.lstrip().upper().startswith(_DDL)]
        assert ddl == []
        # The whole API under the limited role.
        thread = Thread(id="t1", attributes={"k": "v"}, source={"name": "slack", "c": 1})
        thread.add_message(Message(role="user", content="least privilege works"))
        await store.save(thread)
        await store.append("t1", Message(role="assistant", content="appended"))
        loaded = await store.get("t1")
        assert loaded is not None
        assert [m.content for m in loaded.messages] == ["least privilege works", "appended"]
        loaded.add_reaction(loaded.messages[0].id, "👍", "u1")
        loaded.messages[1].attributes["edited"] = True
        await store.save(loaded)
        assert [t.id for t in await store.find_by_attributes({"k": "v"})] == ["t1"]
        assert [t.id for t in await store.find_by_source("slack", {"c": 1})] == ["t1"]
        assert (await store.search_threads("privilege"))[1] == 1
        assert await store.count() == 1
        assert await store.delete("t1") is True
        assert await store.list() == []
        ddl = [s for s in statements if s.lstrip().upper().startswith(_DDL)]
        assert ddl == []
    finally:
        await store.close()


async def test_the_limited_role_really_cannot_create_tables(migrated: tuple[str, str]) -> None:
    """The role the other test uses is limited (else that test would prove nothing)."""
    url, _ = migrated
    store = ThreadStore(url)
    try:
        with pytest.raises(Exception, match=r"(?i)permission denied|command denied"):
            async with store.engine.begin() as connection:
                await connection.execute(text("CREATE TABLE tyler_should_not_exist (x int)"))
    finally:
        await store.close()
