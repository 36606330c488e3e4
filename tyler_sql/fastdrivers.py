"""The fast saves of :mod:`tyler_sql.fastwrite` on each driver: asyncpg (one statement),
asyncmy (several statements per round trip) and aiosqlite (one call to the worker thread)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, Column, Integer
from sqlalchemy.ext.asyncio import AsyncEngine

from tyler_core.changes import ThreadChanges
from tyler_core.models import Message
from tyler_sql.fastwrite import (
    KEY_COLUMNS,
    THREAD_COLUMNS,
    Checkout,
    FastWriter,
    Shape,
    stale,
)
from tyler_sql.schema import Tables, UTCDateTime

__all__ = ["MySQLWriter", "PostgresWriter", "SQLiteWriter"]


# -- PostgreSQL (asyncpg) ----------------------------------------------------------------------


def _pg_array_type(column: Column[Any]) -> str:
    if isinstance(column.type, BigInteger):
        return "int8[]"
    if isinstance(column.type, Integer):
        return "int4[]"
    if isinstance(column.type, UTCDateTime):
        return "timestamptz[]"
    return "text[]"


class PostgresWriter(FastWriter):
    def __init__(self, tables: Tables, engine: AsyncEngine) -> None:
        super().__init__(tables, engine)
        import asyncpg  # type: ignore[import-untyped]

        self._server_error = asyncpg.PostgresError
        names = self._message_rows.names
        columns = self.columns(names)
        quote = self._quote

        def added(first: int) -> str:
            arrays = ", ".join(
                f"${first + n}::{_pg_array_type(tables.messages.c[name])}"
                for n, name in enumerate(names)
            )
            picked = ", ".join(f"m.{quote(name)}" for name in names)
            return (
                f"added AS (INSERT INTO {self.messages} ({quote('thread_id')}, {columns}) "
                f"SELECT thread.id, {picked} FROM thread, unnest({arrays}) AS m({columns}))"
            )

        guard = "WHERE id = $1 AND version = $2"
        update = f"UPDATE {self.threads} SET version = $3, updated_at = $4 {guard}"
        self._append = (
            f"WITH thread AS ({update} RETURNING id), {added(5)} SELECT count(*) FROM thread"
        )
        self._append_token = (
            f"WITH thread AS ({update} AND incarnation = $5 RETURNING id), {added(6)} "
            "SELECT count(*) FROM thread"
        )
        marks = ", ".join(f"${n}" for n in range(1, len(THREAD_COLUMNS) + 1))
        first_key = len(THREAD_COLUMNS) + len(names) + 1
        key_arrays = ", ".join(f"${first_key + n}::text[]" for n in range(len(KEY_COLUMNS)))
        key_columns = self.columns(KEY_COLUMNS)
        picked_keys = ", ".join(f"k.{quote(name)}" for name in KEY_COLUMNS)
        self._new = (
            f"WITH thread AS (INSERT INTO {self.threads} ({self.columns(THREAD_COLUMNS)}) "
            f"VALUES ({marks}) ON CONFLICT (id) DO NOTHING RETURNING id), "
            f"{added(len(THREAD_COLUMNS) + 1)}, "
            f"keys AS (INSERT INTO {self.keys} ({quote('thread_id')}, {key_columns}) "
            f"SELECT thread.id, {picked_keys} FROM thread, unnest({key_arrays}) "
            f"AS k({key_columns})) "
            "SELECT count(*) FROM thread"
        )
        self._width = len(names)

    def _message_arrays(self, thread_id: str, messages: Sequence[Message]) -> list[list[Any]]:
        rows = self.message_rows(thread_id, messages)
        if not rows:
            return [[] for _ in range(self._width)]
        return [list(column) for column in zip(*rows, strict=True)]

    def _broken(self, checkout: Checkout, error: BaseException) -> bool:
        # An error the server reported leaves an autocommit connection idle and usable.
        if isinstance(error, self._server_error):
            return bool(checkout.driver.is_closed())
        return True

    async def write(self, changes: ThreadChanges, shape: Shape) -> bool:
        thread_id = changes.thread.id
        if shape == "new":
            keys = self.key_values(changes)
            key_arrays = (
                [list(column) for column in zip(*keys, strict=True)]
                if keys
                else [[] for _ in KEY_COLUMNS]
            )
            arguments = [
                *self.thread_values(changes),
                *self._message_arrays(thread_id, changes.messages),
                *key_arrays,
            ]
            statement = self._new
        else:
            arguments = [
                thread_id,
                changes.expected_version,
                changes.version,
                self.updated_at(changes),
            ]
            statement = self._append
            if changes.expected_incarnation is not None:
                arguments.append(changes.expected_incarnation)
                statement = self._append_token
            arguments += self._message_arrays(thread_id, changes.added)
        async with self.connection() as checkout:
            if checkout.driver.is_in_transaction():
                return False  # see FastWriter.write
            # No transaction: the connection is in autocommit, one statement is atomic.
            done = await checkout.driver.fetchval(statement, *arguments)
        if done == 1:
            return True
        if shape == "append":
            raise stale(changes)
        return False


# -- MariaDB / MySQL (asyncmy) -----------------------------------------------------------------


def _values(rows: Sequence[Sequence[Any]]) -> tuple[str, list[Any]]:
    """``(%s, ...), (%s, ...)`` for ``rows``, and their values in one list."""
    if not rows:
        return "", []
    one = "(" + ", ".join(["%s"] * len(rows[0])) + ")"
    return ", ".join([one] * len(rows)), [value for row in rows for value in row]


_DUPLICATE_KEY = 1062


class MySQLWriter(FastWriter):
    """An append is one round trip: the guarded ``UPDATE``, then the message inserts, which
    select their rows only if it matched the thread, and ``COMMIT``, in one multi-statement
    query; the server runs them in order and stops at the first error. A new thread too."""

    # The isolation level writers run at (see tyler_sql.engine): sent with the first statement.
    _ISOLATION = "SET TRANSACTION ISOLATION LEVEL READ COMMITTED"
    # Set right after an append's UPDATE: 1 if it matched the thread. The inserts select their
    # rows only then; ROW_COUNT() itself would be the count of whatever statement ran last.
    _MATCHED = "@tyler_matched"

    def __init__(self, tables: Tables, engine: AsyncEngine) -> None:
        super().__init__(tables, engine)
        import asyncmy.errors

        self._integrity_error = asyncmy.errors.IntegrityError
        update = (
            f"UPDATE {self.threads} SET version = %s, updated_at = %s "
            "WHERE id = %s AND version = %s"
        )
        self._update = f"{self._ISOLATION}; {update}"
        self._update_token = f"{self._ISOLATION}; {update} AND incarnation = %s"
        self._note_matched = f"SET {self._MATCHED} = ROW_COUNT()"
        message_columns = f"{self._quote('thread_id')}, {self.columns(self._message_rows.names)}"
        self._insert_messages = f"INSERT INTO {self.messages} ({message_columns}) VALUES "
        self._insert_matched = f"INSERT INTO {self.messages} ({message_columns}) "
        self._select_matched = (
            "SELECT "
            + ", ".join(["%s"] * (len(self._message_rows.names) + 1))
            + f" FROM DUAL WHERE {self._MATCHED} = 1"
        )
        self._insert_keys = (
            f"INSERT INTO {self.keys} ({self._quote('thread_id')}, "
            f"{self.columns(KEY_COLUMNS)}) VALUES "
        )
        self._insert_thread = (
            f"INSERT INTO {self.threads} ({self.columns(THREAD_COLUMNS)}) VALUES ("
            + ", ".join(["%s"] * len(THREAD_COLUMNS))
            + ")"
        )

    def _inserts(
        self, thread_id: str, messages: Sequence[Message], keys: Sequence[Sequence[Any]]
    ) -> tuple[list[str], list[Any]]:
        statements: list[str] = []
        arguments: list[Any] = []
        rows = [[thread_id, *row] for row in self.message_rows(thread_id, messages)]
        for prefix, table_rows in (
            (self._insert_messages, rows),
            (self._insert_keys, [[thread_id, *row] for row in keys]),
        ):
            if table_rows:
                marks, values = _values(table_rows)
                statements.append(prefix + marks)
                arguments += values
        return statements, arguments

    async def write(self, changes: ThreadChanges, shape: Shape) -> bool:
        if shape == "new":
            return await self._write_new(changes)
        thread_id = changes.thread.id
        update, arguments = self.guarded_update(changes)
        statements = [update]
        rows = self.message_rows(thread_id, changes.added)
        if rows:
            selects = [self._select_matched] * len(rows)
            statements += [self._note_matched, self._insert_matched + " UNION ALL ".join(selects)]
            for row in rows:
                arguments.append(thread_id)
                arguments += row
        statements.append("COMMIT")
        async with self.connection() as checkout, checkout.driver.cursor() as cursor:
            await cursor.execute("; ".join(statements), arguments)
            await cursor.nextset()  # the UPDATE
            matched = cursor.rowcount == 1
            while await cursor.nextset():  # a server's error here ends the query: not committed
                pass
            checkout.clean = True
        if not matched:
            raise stale(changes)  # the inserts selected nothing, and COMMIT ended the transaction
        return True

    async def _write_new(self, changes: ThreadChanges) -> bool:
        thread_id = changes.thread.id
        inserts, values = self._inserts(thread_id, changes.messages, self.key_values(changes))
        statement = "; ".join([self._ISOLATION, self._insert_thread, *inserts, "COMMIT"])
        async with self.connection() as checkout, checkout.driver.cursor() as cursor:
            await cursor.execute(statement, [*self.thread_values(changes), *values])
            try:
                await cursor.nextset()  # the thread's INSERT: fails if the id is taken
            except self._integrity_error as error:
                if error.args[0] != _DUPLICATE_KEY:
                    raise
                await checkout.driver.rollback()
                checkout.clean = True
                return False
            while await cursor.nextset():
                pass
            checkout.clean = True
        return True


# -- SQLite (aiosqlite) ------------------------------------------------------------------------


class SQLiteWriter(FastWriter):
    def __init__(self, tables: Tables, engine: AsyncEngine) -> None:
        super().__init__(tables, engine)
        update = (
            f"UPDATE {self.threads} SET version = ?, updated_at = ? WHERE id = ? AND version = ?"
        )
        self._update = update
        self._update_token = f"{update} AND incarnation = ?"
        message_columns = [self._quote("thread_id"), self.columns(self._message_rows.names)]
        self._insert_messages = (
            f"INSERT INTO {self.messages} ({', '.join(message_columns)}) VALUES ("
            + ", ".join(["?"] * (len(self._message_rows.names) + 1))
            + ")"
        )
        self._insert_keys = (
            f"INSERT INTO {self.keys} ({self._quote('thread_id')}, "
            f"{self.columns(KEY_COLUMNS)}) VALUES (?, ?, ?, ?, ?)"
        )
        self._insert_thread = (
            f"INSERT INTO {self.threads} ({self.columns(THREAD_COLUMNS)}) VALUES ("
            + ", ".join(["?"] * len(THREAD_COLUMNS))
            + ") ON CONFLICT (id) DO NOTHING"
        )

    async def write(self, changes: ThreadChanges, shape: Shape) -> bool:
        thread_id = changes.thread.id
        if shape == "new":
            first = (self._insert_thread, self.thread_values(changes))
            messages = changes.messages
            keys = [[thread_id, *row] for row in self.key_values(changes)]
        else:
            first = self.guarded_update(changes)
            messages = changes.added
            keys = []
        rows = [[thread_id, *row] for row in self.message_rows(thread_id, messages)]
        later = [(self._insert_messages, rows), (self._insert_keys, keys)]
        async with self.connection() as checkout:
            driver = checkout.driver
            run = functools.partial(_transaction, driver, first, later)
            done = await driver._execute(run)  # one hop to the connection's worker thread
            checkout.clean = done is not None
        if done:
            return True
        if shape == "append" and done is not None:
            raise stale(changes)
        return False


def _transaction(
    driver: Any,
    first: tuple[str, Sequence[Any]],
    later: Sequence[tuple[str, Sequence[Sequence[Any]]]],
) -> bool | None:
    """In the worker thread: ``first`` (the guard), and the ``later`` inserts if it changed a
    row, in one ``BEGIN IMMEDIATE`` transaction; whether it did (``None``: the connection is
    in a transaction already, nothing was done: see :meth:`FastWriter.write`)."""
    connection = driver._conn
    if connection.in_transaction:
        return None
    connection.execute("BEGIN IMMEDIATE")
    try:
        if connection.execute(*first).rowcount != 1:
            connection.execute("ROLLBACK")
            return False
        for statement, rows in later:
            if rows:
                connection.executemany(statement, rows)
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return True
