"""The two common saves in the fewest round trips, on the driver's own connection.

Most saves are one of two shapes: a new thread (``expected_version == 0``), or messages
appended to a stored thread whose own fields did not change. Through SQLAlchemy each costs a
transaction of three to five statements, and each statement costs more Python than its round
trip to a local server. Here each shape is SQL written once per namespace and sent on the raw
driver connection of a pooled connection (the writers: :mod:`tyler_sql.fastdrivers`):

* PostgreSQL (asyncpg): one statement in autocommit, a data-modifying ``WITH``: the guarded
  ``UPDATE`` (or the ``INSERT ... ON CONFLICT DO NOTHING`` of a new thread) ``RETURNING id``,
  and the inserts of messages and lookup keys select from it, so they insert nothing when it
  matched nothing. One statement is atomic on its own. Rows travel in one JSON document
  (``json_to_recordset``), so the SQL does not depend on how many there are, and asyncpg does
  not check each element of an array argument in Python, which cost more than the rest of a
  save's encoding.
* MariaDB/MySQL (asyncmy, whose connections allow several statements per query): the whole
  transaction is one query, from its ``SET TRANSACTION ISOLATION LEVEL`` to its ``COMMIT``; the
  server runs the statements in order and stops at the first error, which leaves the
  transaction to the pool's rollback. An append's message inserts select their rows only if
  the guarded ``UPDATE`` before them matched (its ``ROW_COUNT()``, kept in a session
  variable), so a stale append writes nothing and commits an empty transaction: one round
  trip either way, as for a new thread. ``NULL``, integers and times are written into the SQL
  text as asyncmy would write them, strings are left to its escaping (``%s``): its call per
  value was most of a save's encoding.
* SQLite (aiosqlite): the whole transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``) runs as one
  call in the connection's worker thread: one thread hop instead of about ten.

What is written is exactly what :class:`~tyler_sql.backend.SQLBackend`'s statement path writes
(the same rows, through the columns' own bind processing); everything else takes that path: a
full rewrite, changed or removed messages, changed thread fields, attachments and reactions,
``preserve=True``, a new thread whose id turns out to be taken, and on MariaDB a save too big
for one query (``write`` returns ``False``, having written nothing).

The connection is checked out without the pool's ping round trip when a fast save returned it
moments ago and its driver knows it open (:func:`tyler_sql.engine.trusting_checkout`). One
whose driver call failed on the connection itself is invalidated, never returned to the pool;
after a server's error (a constraint) it is rolled back and returned as usual.
"""

from __future__ import annotations

import contextlib
import functools
import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from json.encoder import encode_basestring
from typing import Any, Literal

from sqlalchemy import Column, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

from tyler_core.changes import ThreadChanges
from tyler_core.errors import ConcurrencyError
from tyler_core.models import Message
from tyler_sql.engine import returned, trusting_checkout
from tyler_sql.rows import KEY_COLUMNS, MESSAGE_COLUMNS, key_values, message_values
from tyler_sql.schema import JSONText, Tables

__all__ = [
    "KEY_COLUMNS",
    "THREAD_COLUMNS",
    "Checkout",
    "FastWriter",
    "Shape",
    "fast_writer",
    "json_text",
    "shape_of",
    "stale",
]

#: ``new``: a thread not stored yet; ``append``: messages added to a stored thread, nothing else.
Shape = Literal["new", "append"]

#: The ``threads`` columns a fast save writes (``thread_keys``: :data:`KEY_COLUMNS`, ``messages``:
#: :data:`~tyler_sql.rows.MESSAGE_COLUMNS`, each after ``thread_id``).
THREAD_COLUMNS = (
    "id",
    "title",
    "created_at",
    "updated_at",
    "attributes",
    "source",
    "version",
    "incarnation",
)


def shape_of(changes: ThreadChanges) -> Shape | None:
    """Which fast save ``changes`` is, or ``None`` for the statement path."""
    expected = changes.expected_version
    if expected == 0:
        shape: Shape = "new"
        written = changes.messages  # a thread not stored is written whole
    elif (
        expected
        and not changes.full
        and not changes.thread_changed
        and not changes.changed
        and not changes.removed
    ):
        shape = "append"
        written = changes.added
    else:
        return None
    if any(m.attachments or m.reactions for m in written):
        return None
    return shape


def stale(changes: ThreadChanges) -> ConcurrencyError:
    """The error of a save whose version guard matched nothing."""
    return ConcurrencyError(
        f"thread {changes.thread.id!r} is not at version {changes.expected_version} any more "
        "(changed, deleted or stored again since it was loaded); reload it and save again"
    )


# JSONText's bind processing (tyler_sql.schema) with its encoder's options, without the
# encoder's per-call set-up for the common cheap values: a string, an empty object.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_quote = encode_basestring


def json_text(value: Any) -> str | None:
    """What :class:`~tyler_sql.schema.JSONText` binds for ``value``: its JSON text, ``None``
    for ``None``."""
    if value is None:
        return None
    kind = type(value)
    if kind is str:
        return _quote(value)  # what the encoder returns for a string
    if kind is dict and not value:
        return "{}"
    return _encode(value)


def _bind_processor(column: Column[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    column_type = column.type.dialect_impl(dialect)
    if (
        isinstance(column_type, JSONText)
        and column_type.impl_instance.bind_processor(dialect) is None
    ):
        return json_text
    return column_type.bind_processor(dialect)


class _Rows:
    """Rows of one table in a driver's own values: each column through its type's bind
    processing for the dialect (JSON text, UTC times), as SQLAlchemy would send them."""

    def __init__(self, table: Table, names: Sequence[str], dialect: Dialect) -> None:
        self.names = tuple(names)
        self._processors: dict[str, Callable[[Any], Any]] = {}
        for name in self.names:
            processor = _bind_processor(table.c[name], dialect)
            if processor is not None:
                self._processors[name] = processor
        self._indexed = [(self.names.index(name), p) for name, p in self._processors.items()]

    def bind(self, row: list[Any]) -> list[Any]:
        """``row`` (values in the order of ``names``) with each value bound, in place."""
        for index, processor in self._indexed:
            row[index] = processor(row[index])
        return row

    def value(self, name: str, value: Any) -> Any:
        processor = self._processors.get(name)
        return value if processor is None else processor(value)


class Checkout:
    """A pooled connection lent to a fast save: ``driver`` is the driver's connection."""

    __slots__ = ("clean", "driver", "pooled")

    def __init__(self, pooled: PoolProxiedConnection) -> None:
        self.pooled = pooled
        self.driver: Any = pooled.driver_connection
        #: Set once the save ended its transaction (committed or rolled back): the connection
        #: goes back without the rollback of the pool's reset, as after SQLAlchemy's own
        #: transactions.
        self.clean = False


class FastWriter(ABC):
    """The fast saves of one namespace on one driver."""

    def __init__(self, tables: Tables, engine: AsyncEngine) -> None:
        dialect = engine.dialect
        self._engine = engine
        self._dialect = dialect
        quote = dialect.identifier_preparer.quote
        self._quote = quote
        self.threads = quote(tables.threads.name)
        self.messages = quote(tables.messages.name)
        self.keys = quote(tables.keys.name)
        self._message_rows = _Rows(tables.messages, MESSAGE_COLUMNS, dialect)
        self._thread_rows = _Rows(tables.threads, THREAD_COLUMNS, dialect)
        self._tables = tables
        # The guarded UPDATE of an append, without and with the incarnation check (MariaDB and
        # SQLite: see guarded_update).
        self._update = ""
        self._update_token = ""

    def columns(self, names: Sequence[str]) -> str:
        """``a, b, c``, quoted as the dialect needs."""
        return ", ".join(self._quote(name) for name in names)

    def message_rows(self, messages: Sequence[Message]) -> list[list[Any]]:
        """One row per message: the values of :data:`~tyler_sql.rows.MESSAGE_COLUMNS`, bound."""
        bind = self._message_rows.bind
        return [bind(message_values(m)) for m in messages]

    def thread_values(self, changes: ThreadChanges) -> list[Any]:
        """The new ``threads`` row: the values of :data:`THREAD_COLUMNS`, bound."""
        thread = changes.thread
        return self._thread_rows.bind(
            [
                thread.id,
                thread.title,
                thread.created_at,
                changes.updated_at,
                thread.attributes,
                thread.source,
                changes.version,
                changes.incarnation,
            ]
        )

    @staticmethod
    def key_values(changes: ThreadChanges) -> list[tuple[str, str, str, str]]:
        """The thread's ``thread_keys`` rows: the values of :data:`KEY_COLUMNS`."""
        thread = changes.thread
        return key_values(thread.attributes, thread.source)

    def guarded_update(self, changes: ThreadChanges) -> tuple[str, list[Any]]:
        """The version-guarded ``UPDATE`` of an append and its arguments (version, updated_at,
        id, expected version, and the expected incarnation if there is one), for a driver whose
        subclass sets ``_update`` and ``_update_token`` (with the incarnation check)."""
        arguments: list[Any] = [
            changes.version,
            self.updated_at(changes),
            changes.thread.id,
            changes.expected_version,
        ]
        if changes.expected_incarnation is None:
            return self._update, arguments
        return self._update_token, [*arguments, changes.expected_incarnation]

    def updated_at(self, changes: ThreadChanges) -> Any:
        """``updated_at`` as the driver takes it."""
        return self._thread_rows.value("updated_at", changes.updated_at)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Checkout]:
        """A pooled connection for one save. If the body fails on the connection itself (or
        is cancelled half-way through a call), the connection is invalidated, never returned
        to the pool; otherwise it is returned (rolled back by the pool unless marked clean)."""
        with trusting_checkout():
            checkout = Checkout(await self._engine.raw_connection())
        pooled = checkout.pooled
        try:
            yield checkout
        except BaseException as error:
            if self._broken(checkout, error):
                await greenlet_spawn(pooled.invalidate, error)
            else:
                await greenlet_spawn(pooled.close)
            raise
        returned(checkout.driver)
        if checkout.clean:
            # What SQLAlchemy's own Connection does after it ended a transaction.
            close = functools.partial(pooled._close_special, transaction_reset=True)
            await greenlet_spawn(close)
        else:
            await greenlet_spawn(pooled.close)

    def _broken(self, checkout: Checkout, error: BaseException) -> bool:
        """Whether ``error`` leaves the connection unusable (or in an unknown state)."""
        if not isinstance(error, Exception):
            return True  # cancelled mid-call: the protocol may be half-way through a reply
        try:
            dbapi_connection = checkout.pooled.dbapi_connection
            failed: Any = error  # a driver error, which SQLAlchemy's dialect knows
            return bool(self._dialect.is_disconnect(failed, dbapi_connection, None))
        except Exception:
            return True

    @abstractmethod
    async def write(self, changes: ThreadChanges, shape: Shape) -> bool:
        """Save ``changes`` (of :func:`shape_of` ``shape``); ``False`` if it wrote nothing and
        the statement path is to save them: a new thread whose id is taken, or (PostgreSQL,
        SQLite) a connection that came from the pool inside a transaction (one a ``connect``
        event handler began with a query, say), which a fast save would not end. (On MariaDB
        the save's ``COMMIT`` ends it, as on the statement path, where no ``BEGIN`` is sent
        either; there a save that might not fit in one query returns ``False``.)

        Raises:
            ConcurrencyError: an append's version guard matched nothing; nothing was written.
        """


def fast_writer(tables: Tables, engine: AsyncEngine) -> FastWriter | None:
    """The fast saves for ``engine``'s driver, or ``None`` (psycopg: statements only)."""
    # Each writer imports its own driver: only the one in use is installed for sure.
    from tyler_sql import fastdrivers

    writers: dict[str, type[FastWriter]] = {
        "asyncpg": fastdrivers.PostgresWriter,
        "asyncmy": fastdrivers.MySQLWriter,
        "aiosqlite": fastdrivers.SQLiteWriter,
    }
    writer = writers.get(engine.dialect.driver)
    return None if writer is None else writer(tables, engine)
