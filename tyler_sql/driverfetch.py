"""Page statements sent on the driver's own connection, for plain rows.

SQLAlchemy's execution of a statement (its compiled cache, execution context, result objects and
greenlet switches) costs more Python than a page's round trip to a local server. A page statement
of :mod:`tyler_sql.pages` is built once, so its SQL and the order of its parameters are compiled
once per dialect here, then sent on the driver connection of the pooled connection the backend
holds: asyncpg's ``fetch`` (with its own prepared statement cache), aiosqlite's
``execute_fetchall`` (one hop to the connection's thread instead of four) or an asyncmy cursor.
psycopg keeps SQLAlchemy's execution.

Only on a connection without a transaction begun through SQLAlchemy: SQLAlchemy's asyncpg adapter
opens its transaction lazily, with its first statement, which a statement sent here would run
before and outside of. A pooled connection of the backend's single-statement reads has none.

A driver error is raised as SQLAlchemy's :class:`~sqlalchemy.exc.DBAPIError`, as SQLAlchemy's own
execution raises it; the connection is invalidated (never returned to the pool) unless the error
is one the server reported on a connection that stays usable.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["DriverFetch", "driver_fetch"]

_Rows = Sequence[Sequence[Any]]
_Run = Callable[[Any, str, list[Any]], Awaitable[_Rows]]


class _Compiled:
    """A statement's SQL for one dialect, and how to lay out its parameters."""

    __slots__ = ("defaults", "names", "processors", "sql")

    def __init__(self, statement: Select[Any], dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ())
        # Values of the binds the statement carries itself (OFFSET 0, MariaDB's time format).
        self.defaults: dict[str, Any] = {}
        self.processors: list[tuple[int, Callable[[Any], Any]]] = []
        for index, name in enumerate(self.names):
            bind = compiled.binds[name]
            if not bind.required:
                self.defaults[name] = bind.effective_value
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self.processors.append((index, processor))

    def arguments(self, parameters: dict[str, Any] | None) -> list[Any]:
        given = parameters or {}
        defaults = self.defaults
        values = [given[name] if name in given else defaults[name] for name in self.names]
        for index, processor in self.processors:
            values[index] = processor(values[index])
        return values


class DriverFetch:
    """Runs built-once page statements on one driver and tells a broken connection."""

    def __init__(
        self, dialect: Dialect, run: _Run, usable: Callable[[Any, BaseException], bool]
    ) -> None:
        self._dialect = dialect
        self._run = run
        self._usable = usable
        self._compiled: WeakKeyDictionary[Select[Any], _Compiled] = WeakKeyDictionary()

    async def rows(
        self, connection: AsyncConnection, statement: Select[Any], parameters: dict[str, Any] | None
    ) -> _Rows:
        """All rows of ``statement`` on ``connection``'s driver connection, as the driver returns
        them (tuples or records)."""
        compiled = self._compiled.get(statement)
        if compiled is None:
            compiled = self._compiled[statement] = _Compiled(statement, self._dialect)
        arguments = compiled.arguments(parameters)
        driver = (await connection.get_raw_connection()).driver_connection
        try:
            return await self._run(driver, compiled.sql, arguments)
        except Exception as error:
            broken = not self._usable(driver, error)
            if broken:
                await connection.invalidate(error)
            raise DBAPIError(
                compiled.sql, arguments, error, connection_invalidated=broken
            ) from error
        except BaseException as error:
            # Cancelled half-way through a call: the protocol may be mid-reply.
            if not self._usable(driver, error):
                await connection.invalidate(error)
            raise


def driver_fetch(dialect: Dialect) -> DriverFetch | None:
    """The driver fetch for ``dialect``'s driver, or ``None`` (psycopg: SQLAlchemy executes)."""
    driver = dialect.driver
    if driver == "asyncpg":
        import asyncpg  # type: ignore[import-untyped,unused-ignore]

        def asyncpg_usable(connection: Any, error: BaseException) -> bool:
            # An error the server reported leaves the connection idle and usable.
            return isinstance(error, asyncpg.PostgresError) and not connection.is_closed()

        return DriverFetch(dialect, _asyncpg_rows, asyncpg_usable)
    if driver == "aiosqlite":
        return DriverFetch(dialect, _aiosqlite_rows, _sqlite_usable)
    if driver == "asyncmy":
        import asyncmy.errors

        server_errors = (
            asyncmy.errors.ProgrammingError,
            asyncmy.errors.IntegrityError,
            asyncmy.errors.DataError,
            asyncmy.errors.NotSupportedError,
        )

        def asyncmy_usable(connection: Any, error: BaseException) -> bool:
            return isinstance(error, server_errors)

        return DriverFetch(dialect, _asyncmy_rows, asyncmy_usable)
    return None


async def _asyncpg_rows(connection: Any, sql: str, arguments: list[Any]) -> _Rows:
    rows: _Rows = await connection.fetch(sql, *arguments)
    return rows


async def _aiosqlite_rows(connection: Any, sql: str, arguments: list[Any]) -> _Rows:
    rows: _Rows = await connection.execute_fetchall(sql, arguments)
    return rows


def _sqlite_usable(connection: Any, error: BaseException) -> bool:
    # SQLite's errors leave its connection as it was; a cancelled call still runs to its end
    # in the connection's thread, before the next one (and a private in-memory database lives
    # in this one connection: invalidating it would lose the database).
    if "closed database" in str(error):
        return False
    return isinstance(error, sqlite3.Error | asyncio.CancelledError)


async def _asyncmy_rows(connection: Any, sql: str, arguments: list[Any]) -> _Rows:
    async with connection.cursor() as cursor:
        await cursor.execute(sql, arguments)
        rows: _Rows = await cursor.fetchall()
    return rows
