"""Schema management: create a fresh schema, refuse an outdated one, upgrade with Alembic.

The migrations ship inside the package (``tyler_sql/migrations``) and run from a programmatic
Alembic ``Config``, so no ``alembic.ini`` is needed. Each namespace has its own version table,
``{namespace}_alembic_version``. :func:`upgrade` and :func:`check` are what
``tyler-store migrate [--check] URL`` calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shlex
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncConnection

from tyler_core.errors import StoreConnectionError, TylerStoreError
from tyler_core.registry import normalize_url
from tyler_core.settings import StoreOptions, resolve_options, strip_facade_parameters
from tyler_core.urls import mask_url, mask_urls_in
from tyler_sql.schema import Tables, build_tables
from tyler_sql.search import create_search_ddl, fts_table

logger = logging.getLogger("tyler_sql")

__all__ = [
    "alembic_config",
    "check",
    "check_async",
    "drop_namespace",
    "head_revision",
    "prepare_schema",
    "schema_lock",
    "upgrade",
    "upgrade_async",
    "upgrade_command",
]

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(namespace: str, connection: Connection | None = None) -> Config:
    """An Alembic configuration for ``namespace`` that runs on ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["namespace"] = namespace
    config.attributes["connection"] = connection
    return config


@cache
def head_revision() -> str:
    """The newest revision: the schema this version of the package needs."""
    head = ScriptDirectory.from_config(alembic_config("tyler")).get_current_head()
    assert head is not None
    return head


def _migration_context(connection: Connection, tables: Tables) -> MigrationContext:
    return MigrationContext.configure(connection, opts={"version_table": tables.version_table})


def drop_namespace(connection: Connection, namespace: str) -> None:
    """Drop every table of ``namespace`` (through the migrations' downgrades) and its version
    table. What :meth:`SQLBackend.drop` runs; the data is gone afterwards."""
    command.downgrade(alembic_config(namespace, connection), "base")
    connection.exec_driver_sql(f"DROP TABLE IF EXISTS {namespace}_alembic_version")


def upgrade_command(url: str, namespace: str) -> str:
    """The shell command that upgrades ``namespace`` at ``url`` (password masked)."""
    shown = mask_url(url) or url
    if namespace != "tyler":
        shown += ("&" if "?" in shown else "?") + f"namespace={namespace}"
    return f"tyler-store migrate {shlex.quote(shown)}"


def prepare_schema(connection: Connection, tables: Tables, url: str) -> None:
    """Create the current schema on an empty database; accept the current one; refuse others.

    Raises:
        StoreConnectionError: the schema is outdated (the message holds the upgrade command)
            or newer than this package, or no revision is recorded but some of the
            namespace's table names are taken (the message names them); nothing is created.
    """
    revision = _migration_context(connection, tables).get_current_revision()
    head = head_revision()
    if revision == head:
        return
    if revision is None:
        _refuse_taken_names(connection, tables)
        _create(connection, tables)
        logger.info("created the schema of namespace %r at %s", tables.namespace, head)
        return
    raise StoreConnectionError(_outdated(tables.namespace, revision, url))


#: Dialects whose DDL commits at once: a creation that fails keeps what it made so far.
_DDL_COMMITS = frozenset({"mysql", "mariadb"})
#: The shadow tables SQLite's FTS5 makes for the search table (external content: no _content).
_FTS5_SHADOWS = ("data", "idx", "docsize", "config")


def _schema_names(tables: Tables, dialect: str) -> list[str]:
    """Every table (or view name) creating the namespace's schema takes, in creation order."""
    names = [table.name for table in tables.metadata.sorted_tables]
    if dialect == "sqlite":
        search = fts_table(tables.namespace)
        names += [search, *(f"{search}_{shadow}" for shadow in _FTS5_SHADOWS)]
    return [*names, tables.version_table]


def _taken_names(connection: Connection, tables: Tables) -> list[str]:
    inspector = inspect(connection)
    existing = {*inspector.get_table_names(), *inspector.get_view_names()}
    return [n for n in _schema_names(tables, connection.dialect.name) if n in existing]


def _taken_names_error(connection: Connection, tables: Tables) -> str | None:
    """With no revision recorded, any of the namespace's names that exists is not ours: the
    creation would skip it and fail on its columns (MariaDB: keeping the tables it made), and
    ``tyler-store migrate`` cannot adopt it either. The message saying so, or ``None``."""
    taken = _taken_names(connection, tables)
    if not taken:
        return None
    return (
        f"namespace {tables.namespace!r} has no recorded schema revision, yet these of its "
        f"table names exist: {', '.join(taken)}. They do not belong to a tyler-threadstore "
        "schema of this namespace (or one whose creation was cut short): drop them, or choose "
        "another namespace"
    )


def _refuse_taken_names(connection: Connection, tables: Tables) -> None:
    error = _taken_names_error(connection, tables)
    if error is not None:
        raise StoreConnectionError(error)


def _create(connection: Connection, tables: Tables) -> None:
    """Create the schema, its names checked free; if that fails where DDL is not undone by the
    rollback, drop what it made (best effort), so that the next attempt starts clean."""
    try:
        tables.metadata.create_all(connection)
        for statement in create_search_ddl(tables.namespace, connection.dialect.name):
            connection.exec_driver_sql(statement)
        script = ScriptDirectory.from_config(alembic_config(tables.namespace))
        _migration_context(connection, tables).stamp(script, "head")
    except Exception:
        if connection.dialect.name in _DDL_COMMITS:
            _drop_created(connection, tables)
        raise


def _drop_created(connection: Connection, tables: Tables) -> None:
    quote = connection.dialect.identifier_preparer.quote
    for name in reversed(_schema_names(tables, connection.dialect.name)):
        try:
            connection.exec_driver_sql(f"DROP TABLE IF EXISTS {quote(name)}")
        except Exception:
            logger.warning(
                "could not drop %s after the failed creation of namespace %r",
                name,
                tables.namespace,
                exc_info=True,
            )


def _outdated(namespace: str, revision: str, url: str) -> str:
    found = f"revision {revision}"
    if revision not in _known_revisions():
        return (
            f"the schema of namespace {namespace!r} is at {found}, which this version of "
            f"tyler-threadstore does not know (it needs {head_revision()}): upgrade the package"
        )
    return (
        f"the schema of namespace {namespace!r} is outdated ({found}, needs "
        f"{head_revision()}): upgrade it with: {upgrade_command(url, namespace)}"
    )


@cache
def _known_revisions() -> frozenset[str]:
    script = ScriptDirectory.from_config(alembic_config("tyler"))
    return frozenset(r.revision for r in script.walk_revisions())


def _lock_key(namespace: str) -> int:
    return int.from_bytes(
        hashlib.sha256(f"tyler:{namespace}".encode()).digest()[:8], "big", signed=True
    )


@asynccontextmanager
async def schema_lock(connection: AsyncConnection, namespace: str) -> AsyncIterator[None]:
    """Serialise schema work on ``namespace`` between processes (SQLite: the write lock does)."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        await connection.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(namespace)}
        )
        yield
    elif dialect in ("mysql", "mariadb"):
        name = f"tyler_schema_{namespace}"
        await connection.execute(text("SELECT GET_LOCK(:name, 60)"), {"name": name})
        try:
            yield
        finally:
            await connection.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": name})
    else:
        yield


def _options(url: str, namespace: str) -> tuple[str, StoreOptions]:
    backend_url, query = strip_facade_parameters(normalize_url(url))
    keywords: dict[str, Any] = {} if "namespace" in query else {"namespace": namespace}
    return backend_url, resolve_options(keywords, query)


async def _run(url: str, namespace: str, work: Any) -> Any:
    from tyler_sql.backend import SQLBackend

    backend_url, options = _options(url, namespace)
    backend = SQLBackend.from_url(backend_url, options)
    try:
        async with backend.writer() as connection, schema_lock(connection, options.namespace):
            return await connection.run_sync(work, build_tables(options.namespace), backend_url)
    except (TylerStoreError, ValueError):
        raise
    except Exception as exc:
        # The command line prints this: no password may reach it.
        detail = mask_urls_in(f"{type(exc).__name__}: {exc}")
        password = backend.engine.url.password
        if password:
            detail = detail.replace(str(password), "***")
        raise StoreConnectionError(f"could not migrate {mask_url(url)}: {detail}") from None
    finally:
        await backend.close()


def _upgrade(connection: Connection, tables: Tables, url: str) -> None:
    if _migration_context(connection, tables).get_current_revision() is None:
        _refuse_taken_names(connection, tables)
    command.upgrade(alembic_config(tables.namespace, connection), "head")


def _check(connection: Connection, tables: Tables, url: str) -> tuple[bool, str]:
    revision = _migration_context(connection, tables).get_current_revision()
    head = head_revision()
    where = f"namespace {tables.namespace!r} at {mask_url(url)}"
    if revision == head:
        return True, f"{where} is up to date (revision {head})"
    if revision is None:
        error = _taken_names_error(connection, tables)
        if error is not None:
            return False, error
        return False, (
            f"{where} has no schema yet; create it with: {upgrade_command(url, tables.namespace)}"
        )
    return False, _outdated(tables.namespace, revision, url)


async def upgrade_async(url: str, *, namespace: str = "tyler") -> None:
    """Upgrade (or create) the schema of ``namespace`` at ``url`` to the newest revision. A
    ``namespace`` in the URL's query wins over the keyword.

    Raises:
        StoreConnectionError: the database cannot be reached or the upgrade failed (the
            message has the password masked).
        ValueError: the URL is not a SQL store URL.
    """
    await _run(url, namespace, _upgrade)


async def check_async(url: str, *, namespace: str = "tyler") -> tuple[bool, str]:
    """Whether the schema of ``namespace`` at ``url`` is current, and a sentence saying so."""
    result: tuple[bool, str] = await _run(url, namespace, _check)
    return result


def upgrade(url: str, *, namespace: str = "tyler") -> None:
    """Blocking :func:`upgrade_async`, for the command line (not inside a running event loop)."""
    asyncio.run(upgrade_async(url, namespace=namespace))


def check(url: str, *, namespace: str = "tyler") -> tuple[bool, str]:
    """Blocking :func:`check_async`, for the command line (not inside a running event loop)."""
    return asyncio.run(check_async(url, namespace=namespace))
