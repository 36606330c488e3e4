"""Thin wrappers over asyncpg, aiosqlite and asyncmy: one shape for the SQL baseline.

Statements are written with ``?`` placeholders and translated per driver; ``in_list(n)`` gives a
placeholder list for ``IN (...)``. Nothing here goes through SQLAlchemy.
"""

from __future__ import annotations

import asyncio
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["Driver", "driver_for_url"]

Row = Sequence[Any]
POOL = 10  # connections, for the concurrent workloads


class Driver(ABC):
    """A connection source with transactions, for one SQL dialect."""

    dialect: str

    @abstractmethod
    async def open(self) -> None:
        """Connect."""

    @abstractmethod
    async def close(self) -> None:
        """Disconnect."""

    @abstractmethod
    def transaction(self) -> Any:
        """``async with driver.transaction() as tx``: a write transaction (``tx`` has
        ``execute``, ``executemany``, ``fetch``)."""

    @abstractmethod
    def session(self) -> Any:
        """``async with driver.session() as tx``: one connection in autocommit, for reads."""

    def in_list(self, count: int) -> str:
        """``?, ?, ...`` for ``IN (...)``."""
        return ", ".join("?" * count)


class _Tx:
    """Executes on one connection; subclasses translate placeholders."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    async def execute(self, sql: str, args: Row = ()) -> None:
        raise NotImplementedError

    async def executemany(self, sql: str, rows: Sequence[Row]) -> None:
        raise NotImplementedError

    async def fetch(self, sql: str, args: Row = ()) -> list[Row]:
        raise NotImplementedError


# -- PostgreSQL ------------------------------------------------------------------------------

_QMARK = re.compile(r"\?")


def _dollars(sql: str) -> str:
    counter = iter(range(1, 100_000))
    return _QMARK.sub(lambda _: f"${next(counter)}", sql)


class _PgTx(_Tx):
    async def execute(self, sql: str, args: Row = ()) -> None:
        await self.connection.execute(_dollars(sql), *args)

    async def executemany(self, sql: str, rows: Sequence[Row]) -> None:
        await self.connection.executemany(_dollars(sql), rows)

    async def fetch(self, sql: str, args: Row = ()) -> list[Row]:
        return list(await self.connection.fetch(_dollars(sql), *args))


class PgDriver(Driver):
    """asyncpg with a pool."""

    dialect = "postgresql"

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._pool: Any = None

    async def open(self) -> None:
        import asyncpg  # type: ignore[import-untyped,unused-ignore]

        self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=POOL)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Tx]:
        async with self._pool.acquire() as connection, connection.transaction():
            yield _PgTx(connection)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[_Tx]:
        async with self._pool.acquire() as connection:
            yield _PgTx(connection)


# -- SQLite ----------------------------------------------------------------------------------


class _SqliteTx(_Tx):
    async def execute(self, sql: str, args: Row = ()) -> None:
        await self.connection.execute(sql, tuple(args))

    async def executemany(self, sql: str, rows: Sequence[Row]) -> None:
        await self.connection.executemany(sql, [tuple(r) for r in rows])

    async def fetch(self, sql: str, args: Row = ()) -> list[Row]:
        async with self.connection.execute(sql, tuple(args)) as cursor:
            return list(await cursor.fetchall())


class SqliteDriver(Driver):
    """aiosqlite: one connection that tasks take turns on (SQLite has one writer anyway)."""

    dialect = "sqlite"

    def __init__(self, path: str) -> None:
        self._path = path
        self._connection: Any = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        import aiosqlite

        self._connection = await aiosqlite.connect(self._path, isolation_level=None)
        for pragma in ("busy_timeout = 5000", "journal_mode = WAL", "synchronous = NORMAL"):
            await self._connection.execute(f"PRAGMA {pragma}")

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Tx]:
        async with self._lock:
            await self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTx(self._connection)
            except BaseException:
                await self._connection.execute("ROLLBACK")
                raise
            await self._connection.execute("COMMIT")

    @asynccontextmanager
    async def session(self) -> AsyncIterator[_Tx]:
        async with self._lock:
            yield _SqliteTx(self._connection)


# -- MariaDB / MySQL -------------------------------------------------------------------------


class _MyTx(_Tx):
    async def execute(self, sql: str, args: Row = ()) -> None:
        async with self.connection.cursor() as cursor:
            await cursor.execute(sql.replace("?", "%s"), tuple(args))

    async def executemany(self, sql: str, rows: Sequence[Row]) -> None:
        async with self.connection.cursor() as cursor:
            await cursor.executemany(sql.replace("?", "%s"), [tuple(r) for r in rows])

    async def fetch(self, sql: str, args: Row = ()) -> list[Row]:
        async with self.connection.cursor() as cursor:
            await cursor.execute(sql.replace("?", "%s"), tuple(args))
            return list(await cursor.fetchall())


class MyDriver(Driver):
    """asyncmy with a pool, autocommit outside transactions."""

    dialect = "mysql"

    def __init__(self, **connect: Any) -> None:
        self._connect = connect
        self._pool: Any = None

    async def open(self) -> None:
        import asyncmy

        self._pool = await asyncmy.create_pool(
            minsize=1, maxsize=POOL, autocommit=True, charset="utf8mb4", **self._connect
        )

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            await self._pool.wait_closed()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Tx]:
        async with self._pool.acquire() as connection:
            await connection.begin()
            try:
                yield _MyTx(connection)
            except BaseException:
                await connection.rollback()
                raise
            await connection.commit()

    @asynccontextmanager
    async def session(self) -> AsyncIterator[_Tx]:
        async with self._pool.acquire() as connection:
            yield _MyTx(connection)


def driver_for_url(url: str) -> Driver:
    """The raw driver for a store URL (the ``+driver`` part is ignored: PostgreSQL always uses
    asyncpg, MariaDB asyncmy, SQLite aiosqlite)."""
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    parts = urlsplit(url)
    if scheme in ("postgresql", "postgres"):
        return PgDriver("postgresql://" + url.split("://", 1)[1])
    if scheme == "sqlite":
        return SqliteDriver(url.split("://", 1)[1][1:])
    if scheme in ("mysql", "mariadb"):
        return MyDriver(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""),
            db=parts.path.lstrip("/") or "test",
        )
    raise ValueError(f"no SQL driver for {scheme!r}")
