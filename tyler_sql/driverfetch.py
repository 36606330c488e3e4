"""Page statements sent on the driver's own connection, for plain rows.

SQLAlchemy's execution of a statement (its compiled cache, execution context, result objects and
greenlet switches) costs more Python than a page's round trip to a local server. A page statement
of :mod:`tyler_sql.pagequeries` is built once, so its SQL and the order of its parameters are
compiled once per dialect here, then sent on the driver connection of the pooled connection the
backend holds: asyncpg's ``fetch`` (with its own prepared statement cache), aiosqlite's
``execute_fetchall`` (one hop to the connection's thread instead of four) or an asyncmy cursor.
psycopg keeps SQLAlchemy's execution.

Only on a connection without a transaction begun through SQLAlchemy: SQLAlchemy's asyncpg adapter
opens its transaction lazily, with its first statement, which a statement sent here would run
before and outside of. A pooled connection of the backend's single-statement reads has none.

Given the engine instead of a connection, :meth:`DriverFetch.rows` checks a pooled connection out
for the one statement and returns it without the pool's reset, which costs a round trip on
MariaDB (its ``ROLLBACK``; the statement ends the transaction it began with a ``ROLLBACK`` of its
own, in the same query) and a hop to the connection's thread on SQLite, and SQLAlchemy's
``Connection`` around it, which costs Python: 0.1 to 0.3 ms of each read. Nor, for a connection
a read or a fast save returned moments ago and that its driver knows open, the pool's ping
(:func:`tyler_sql.engine.trusting_checkout`): 0.1 to 0.2 ms more. Should such a connection turn
out lost (SQLAlchemy's dialect tells a disconnect), the statement, which changes nothing, is sent
once more on a connection the pool pinged or opened.

A driver error is raised as SQLAlchemy's :class:`~sqlalchemy.exc.DBAPIError`, as SQLAlchemy's own
execution raises it; the connection is invalidated (never returned to the pool) unless the error
is one the server reported on a connection that stays usable.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

from tyler_sql.engine import returned, trusting_checkout

__all__ = ["DriverFetch", "driver_fetch"]

_Rows = Sequence[Sequence[Any]]
_Run = Callable[[Any, str, list[Any]], Awaitable[_Rows]]


class _Compiled:
    """A statement's SQL for one dialect, and how to lay out its parameters."""

    __slots__ = ("alone", "defaults", "names", "processors", "sql")

    def __init__(self, statement: Select[Any], dialect: Dialect, end: str) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        #: The SQL on a connection of its own: ``end`` ends the transaction it began.
        self.alone = self.sql + end
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ())
        # Values of the binds the statement carries itself (OFFSET 0, LIMIT 2**63 - 1).
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
        self,
        dialect: Dialect,
        run: _Run,
        usable: Callable[[Any, BaseException], bool],
        *,
        idle: Callable[[Any], bool],
        end: str = "",
        pinged: bool = True,
    ) -> None:
        self._dialect = dialect
        self._run = run
        self._usable = usable
        self._idle = idle
        self._end = end
        # Whether the pool pings a connection it lends (not on SQLite): then one it may lend
        # without (see tyler_sql.engine.trusting_checkout).
        self._pinged = pinged
        self._compiled: WeakKeyDictionary[Select[Any], _Compiled] = WeakKeyDictionary()

    def _compile(self, statement: Select[Any]) -> _Compiled:
        compiled = self._compiled.get(statement)
        if compiled is None:
            compiled = self._compiled[statement] = _Compiled(statement, self._dialect, self._end)
        return compiled

    async def rows(
        self,
        connection: AsyncConnection | AsyncEngine,
        statement: Select[Any],
        parameters: dict[str, Any] | None,
    ) -> _Rows:
        """All rows of ``statement`` on ``connection``'s driver connection, as the driver returns
        them (tuples or records); given an engine, on a pooled connection of its own (see
        above)."""
        if isinstance(connection, AsyncEngine):
            return await self._alone(connection, statement, parameters)
        compiled = self._compile(statement)
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

    async def _alone(
        self, engine: AsyncEngine, statement: Select[Any], parameters: dict[str, Any] | None
    ) -> _Rows:
        compiled = self._compile(statement)
        arguments = compiled.arguments(parameters)
        if self._pinged:
            with trusting_checkout() as trust:
                pooled = await engine.raw_connection()
            retry = trust.skipped
        else:
            pooled, retry = await engine.raw_connection(), False
        rows = await self._on(pooled, compiled, arguments, retry=retry)
        if rows is None:  # lost, lent without a ping: once more, on a pinged (or new) one
            rows = await self._on(await engine.raw_connection(), compiled, arguments, retry=False)
            assert rows is not None
        return rows

    async def _on(
        self,
        pooled: PoolProxiedConnection,
        compiled: _Compiled,
        arguments: list[Any],
        *,
        retry: bool,
    ) -> _Rows | None:
        # The rows of the statement on a pooled connection of its own, which goes back to the
        # pool, or is invalidated if broken; None if it was lost and ``retry`` says to send the
        # statement again (on a connection that skipped the pool's ping).
        driver = pooled.driver_connection
        try:
            rows = await self._run(driver, compiled.alone, arguments)
        except BaseException as error:
            # Asked before the invalidation closes the connection (asyncpg's dialect answers
            # whether it is closed).
            lost = retry and isinstance(error, Exception) and self._lost(pooled, error)
            broken = lost or not self._usable(driver, error)
            # Broken: never back in the pool. Else back with the pool's reset (MariaDB: the
            # statement failed before its ROLLBACK).
            if broken:
                await greenlet_spawn(pooled.invalidate, error)
            else:
                await greenlet_spawn(pooled.close)
            if lost:
                return None
            if isinstance(error, Exception):
                raise DBAPIError(
                    compiled.alone, arguments, error, connection_invalidated=broken
                ) from error
            raise
        if self._pinged:
            returned(driver)
        if self._idle(driver):
            # Nothing to roll back: what SQLAlchemy's own Connection does after a transaction.
            await greenlet_spawn(functools.partial(pooled._close_special, transaction_reset=True))
        else:  # in a transaction it did not begin (a connect event's, say): the pool ends it
            await greenlet_spawn(pooled.close)
        return rows

    def _lost(self, pooled: PoolProxiedConnection, error: Exception) -> bool:
        # Whether the connection itself failed, as SQLAlchemy's dialect tells a disconnect.
        try:
            failed: Any = error  # a driver error, which the dialect knows
            return bool(self._dialect.is_disconnect(failed, pooled.dbapi_connection, None))
        except Exception:
            return False


def driver_fetch(dialect: Dialect) -> DriverFetch | None:
    """The driver fetch for ``dialect``'s driver, or ``None`` (psycopg: SQLAlchemy executes)."""
    driver = dialect.driver
    if driver == "asyncpg":
        import asyncpg  # type: ignore[import-untyped,unused-ignore]

        def asyncpg_usable(connection: Any, error: BaseException) -> bool:
            # An error the server reported leaves the connection idle and usable.
            return isinstance(error, asyncpg.PostgresError) and not connection.is_closed()

        def asyncpg_idle(connection: Any) -> bool:
            return not connection.is_in_transaction()

        return DriverFetch(dialect, _asyncpg_rows, asyncpg_usable, idle=asyncpg_idle)
    if driver == "aiosqlite":
        return DriverFetch(
            dialect, _aiosqlite_rows, _sqlite_usable, idle=_sqlite_idle, pinged=False
        )
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

        # A statement begins a transaction (autocommit is off): ROLLBACK, in the same query,
        # ends it. Its server status flags would tell it done: asyncmy keeps them private.
        return DriverFetch(
            dialect, _asyncmy_rows, asyncmy_usable, idle=_asyncmy_idle, end="; ROLLBACK"
        )
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


def _sqlite_idle(connection: Any) -> bool:
    return not connection.in_transaction


async def _asyncmy_rows(connection: Any, sql: str, arguments: list[Any]) -> _Rows:
    async with connection.cursor() as cursor:
        await cursor.execute(sql, arguments)
        rows: _Rows = await cursor.fetchall()
        while await cursor.nextset():  # a ROLLBACK after the statement (see driver_fetch)
            pass
    return rows


def _asyncmy_idle(connection: Any) -> bool:
    # The ROLLBACK ran: the query would have failed otherwise.
    return True
