"""The fast saves of :mod:`tyler_sql.fastwrite` on each driver: asyncpg (one statement),
asyncmy (several statements per round trip) and aiosqlite (one call to the worker thread)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, Integer, Table
from sqlalchemy.ext.asyncio import AsyncEngine

from tyler_core.changes import ThreadChanges
from tyler_core.models import Message
from tyler_sql.fastwrite import (
    KEY_COLUMNS,
    THREAD_COLUMNS,
    Checkout,
    FastWriter,
    Shape,
    json_text,
    stale,
)
from tyler_sql.rows import MESSAGE_COLUMNS, message_values
from tyler_sql.schema import JSONText, Tables, UTCDateTime

__all__ = ["MySQLWriter", "PostgresWriter", "SQLiteWriter"]


# -- PostgreSQL (asyncpg) ----------------------------------------------------------------------

# The keys of a new thread's document: its messages' rows and its keys' rows.
_M = "m"
_K = "k"


def _pg_record_type(column: Column[Any]) -> str:
    # The column's type in the record read from the JSON document: the JSON text of a document
    # as it is there (``json``, not ``jsonb``, keeps it byte for byte), a time from its ISO text.
    if isinstance(column.type, JSONText):
        return "json"
    if isinstance(column.type, BigInteger):
        return "int8"
    if isinstance(column.type, Integer):
        return "int4"
    if isinstance(column.type, UTCDateTime):
        return "timestamptz"
    return "text"


class PostgresWriter(FastWriter):
    """Rows travel in one JSON document (``json_to_recordset``): asyncpg would check every
    element of an array argument in Python, which cost more than the rest of a save's encoding.
    A message's documents (content, attributes ...) are nested in it as JSON values, and their
    text is what a ``json`` field holds and stores: exactly what JSONText binds (the encoder's
    options are the same)."""

    def __init__(self, tables: Tables, engine: AsyncEngine) -> None:
        super().__init__(tables, engine)
        import asyncpg  # type: ignore[import-untyped]

        self._server_error = asyncpg.PostgresError
        quote = self._quote
        self._to_utc = self._message_rows.value
        self._timestamp = MESSAGE_COLUMNS.index("timestamp")

        def recordset(table: Table, names: Sequence[str], document: str) -> str:
            """The ``INSERT`` of ``table``'s rows from the objects of ``document``."""
            picked, records = self.records(table, names, document)
            return (
                f"INSERT INTO {quote(table.name)} ({quote('thread_id')}, {self.columns(names)}) "
                f"SELECT thread.id, {picked} FROM thread, {records}"
            )

        def added(document: str) -> str:
            return f"added AS ({recordset(tables.messages, MESSAGE_COLUMNS, document)})"

        guard = "WHERE id = $1 AND version = $2"
        update = f"UPDATE {self.threads} SET version = $3, updated_at = $4 {guard}"
        self._append = (
            f"WITH thread AS ({update} RETURNING id), {added('$5::json')} "
            "SELECT count(*) FROM thread"
        )
        self._append_token = (
            f"WITH thread AS ({update} AND incarnation = $5 RETURNING id), {added('$6::json')} "
            "SELECT count(*) FROM thread"
        )
        marks = ", ".join(f"${n}" for n in range(1, len(THREAD_COLUMNS) + 1))
        # A new thread's messages and keys: one document {"m": [...], "k": [...]}.
        document = f"${len(THREAD_COLUMNS) + 1}::json"
        messages = added(f"{document} -> '{_M}'")
        keys = recordset(tables.keys, KEY_COLUMNS, f"{document} -> '{_K}'")
        self._new = (
            f"WITH thread AS (INSERT INTO {self.threads} ({self.columns(THREAD_COLUMNS)}) "
            f"VALUES ({marks}) ON CONFLICT (id) DO NOTHING RETURNING id), "
            f"{messages}, keys AS ({keys}) SELECT count(*) FROM thread"
        )

    def records(
        self,
        table: Table,
        names: Sequence[str],
        document: str,
        *,
        replace: dict[str, str] | None = None,
    ) -> tuple[str, str]:
        """The select list of ``table``'s columns ``names`` (``replace``: SQL for some of them,
        which may use the record's ``r.<name>``) and the ``FROM`` item of the records in
        ``document`` (the SQL of a JSON array of objects, such as :meth:`message_document`'s
        as an argument)."""
        quote = self._quote
        replace = replace or {}
        fields = ", ".join(f"{quote(n)} {_pg_record_type(table.c[n])}" for n in names)
        picked = ", ".join(
            replace[n]
            if n in replace
            else f"r.{quote(n)}::text"
            if isinstance(table.c[n].type, JSONText)
            else f"r.{quote(n)}"
            for n in names
        )
        return picked, f"json_to_recordset({document}) AS r({fields})"

    def message_document(self, messages: Sequence[Message]) -> str | None:
        """The JSON array of ``messages``' rows (:data:`~tyler_sql.rows.MESSAGE_COLUMNS`), for
        the records of :meth:`records`."""
        return json_text(self._message_objects(messages))

    def _message_objects(self, messages: Sequence[Message]) -> list[dict[str, Any]]:
        objects = []
        to_utc = self._to_utc
        timestamp = self._timestamp
        for message in messages:
            values = message_values(message)
            values[timestamp] = to_utc("timestamp", values[timestamp]).isoformat()
            objects.append(dict(zip(MESSAGE_COLUMNS, values, strict=True)))
        return objects

    def _broken(self, checkout: Checkout, error: BaseException) -> bool:
        # An error the server reported leaves an autocommit connection idle and usable.
        if isinstance(error, self._server_error):
            return bool(checkout.driver.is_closed())
        return True

    async def write(self, changes: ThreadChanges, shape: Shape) -> bool:
        if shape == "new":
            keys = [dict(zip(KEY_COLUMNS, row, strict=True)) for row in self.key_values(changes)]
            document = {_M: self._message_objects(changes.messages), _K: keys}
            arguments = [*self.thread_values(changes), json_text(document)]
            statement = self._new
        else:
            arguments = [
                changes.thread.id,
                changes.expected_version,
                changes.version,
                self.updated_at(changes),
            ]
            statement = self._append
            if changes.expected_incarnation is not None:
                arguments.append(changes.expected_incarnation)
                statement = self._append_token
            arguments.append(self.message_document(changes.added))
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


def _literals(row: Sequence[Any], strings: list[Any]) -> str:
    """``row``'s values as the SQL of a ``VALUES`` tuple or a select list: ``NULL``, integers and
    times written in as asyncmy would write them, anything else a ``%s`` left to the driver's
    escaping (its value appended to ``strings``). The driver's call per value costs more than
    this test of its type, and a save has dozens of values."""
    parts = []
    for value in row:
        kind = type(value)
        if value is None:
            parts.append("NULL")
        elif kind is int:
            parts.append(str(value))
        elif kind is datetime:  # naive UTC (UTCDateTime), to the microsecond
            parts.append(f"'{value.isoformat(' ', 'microseconds')}'")
        else:
            parts.append("%s")
            strings.append(value)
    return ", ".join(parts)


def _key_tuples(thread_id: str, keys: Sequence[Sequence[str]], strings: list[Any]) -> str:
    """The ``VALUES`` tuples of ``thread_keys`` rows: a digest (hexadecimal) and a kind (a
    constant) need no escaping."""
    tuples = []
    for digest, kind, key, value in keys:
        tuples.append(f"(%s, '{digest}', '{kind}', %s, %s)")
        strings += (thread_id, key, value)
    return ", ".join(tuples)


def _escaped_bytes(value: Any) -> int:
    """At most the bytes ``value`` takes in a query asyncmy escapes and encodes: UTF-8 takes up
    to 4 bytes a character, an escaped ASCII character 2; the quotes and a ``, `` besides."""
    text = value if isinstance(value, str) else str(value)
    return len(text) * (2 if text.isascii() else 4) + 4


_DUPLICATE_KEY = 1062


class MySQLWriter(FastWriter):
    """An append is one round trip: the guarded ``UPDATE``, then the message inserts, which
    select their rows only if it matched the thread, and ``COMMIT``, in one multi-statement
    query; the server runs them in order and stops at the first error. A new thread too.

    A query must fit in the server's ``max_allowed_packet``: a save that might come near it
    takes the statement path (:meth:`fits`), whose driver sends the inserts in pieces."""

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
        message_columns = f"{self._quote('thread_id')}, {self.columns(MESSAGE_COLUMNS)}"
        self._insert_messages = f"INSERT INTO {self.messages} ({message_columns}) VALUES "
        self._insert_matched = f"INSERT INTO {self.messages} ({message_columns}) "
        self._where_matched = f" FROM DUAL WHERE {self._MATCHED} = 1"
        self._insert_keys = (
            f"INSERT INTO {self.keys} ({self._quote('thread_id')}, "
            f"{self.columns(KEY_COLUMNS)}) VALUES "
        )
        self._insert_thread = f"INSERT INTO {self.threads} ({self.columns(THREAD_COLUMNS)}) VALUES "
        self._packet: int | None = None  # the server's max_allowed_packet, read once

    async def fits(self, cursor: Any, statement: str, arguments: Sequence[Any]) -> bool:
        """Whether ``statement`` with ``arguments`` surely takes at most half the server's
        ``max_allowed_packet`` (read through ``cursor`` the first time, outside any
        transaction): the server refuses a bigger query whole. Half, because the value read
        once may have been lowered since for new connections."""
        if self._packet is None:
            await cursor.execute("SELECT @@max_allowed_packet")
            (packet,) = await cursor.fetchone()
            self._packet = int(packet)
        size = _escaped_bytes(statement) + sum(map(_escaped_bytes, arguments))
        return size <= self._packet // 2

    async def write(self, changes: ThreadChanges, shape: Shape) -> bool:
        if shape == "new":
            return await self._write_new(changes)
        thread_id = changes.thread.id
        update, arguments = self.guarded_update(changes)
        statements = [update]
        rows = self.message_rows(changes.added)
        if rows:
            selects = [
                f"SELECT {_literals([thread_id, *row], arguments)}{self._where_matched}"
                for row in rows
            ]
            statements += [self._note_matched, self._insert_matched + " UNION ALL ".join(selects)]
        statements.append("COMMIT")
        statement = "; ".join(statements)
        async with self.connection() as checkout, checkout.driver.cursor() as cursor:
            if not await self.fits(cursor, statement, arguments):
                return False
            await cursor.execute(statement, arguments)
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
        arguments: list[Any] = []
        statements = [
            self._ISOLATION,
            f"{self._insert_thread}({_literals(self.thread_values(changes), arguments)})",
        ]
        if changes.messages:
            tuples = ", ".join(
                f"({_literals([thread_id, *row], arguments)})"
                for row in self.message_rows(changes.messages)
            )
            statements.append(self._insert_messages + tuples)
        keys = self.key_values(changes)
        if keys:
            statements.append(self._insert_keys + _key_tuples(thread_id, keys, arguments))
        statements.append("COMMIT")
        statement = "; ".join(statements)
        async with self.connection() as checkout, checkout.driver.cursor() as cursor:
            if not await self.fits(cursor, statement, arguments):
                return False
            await cursor.execute(statement, arguments)
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
        rows = [[thread_id, *row] for row in self.message_rows(messages)]
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
