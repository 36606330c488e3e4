"""SQLBackend: threads in PostgreSQL, SQLite or MariaDB/MySQL through SQLAlchemy 2 async Core.

Where it differs from or adds to the contract:

* ``open()`` creates the schema on an empty database and refuses an outdated one with the command
  that upgrades it (:mod:`tyler_sql.migrate`).
* A save is one transaction that writes only the change set: the thread row is updated under a
  version guard (``UPDATE ... WHERE version = :expected``; a new thread is an ``INSERT``), then
  the removed and changed messages are deleted and the added and changed ones inserted, each
  table in one batched statement, so the number of statements does not grow with the thread.
  Deleting changed messages before inserting them also lets messages swap sequences without
  tripping the unique ``(thread_id, sequence)`` constraint half-way.
* The two common saves, a new thread and messages appended to a stored thread (nothing else
  changed, no attachments or reactions), skip SQLAlchemy's statements: on asyncpg, asyncmy and
  aiosqlite they run SQL written once per namespace on the driver's own connection, in the
  fewest round trips (PostgreSQL: one statement; :mod:`tyler_sql.fastwrite`).
* ``append()`` reads the highest sequence once the thread row is locked (``SELECT ... FOR
  UPDATE``; SQLite: ``BEGIN IMMEDIATE``), or known unchanged since the statement's snapshot
  (PostgreSQL's one-statement append): on asyncpg, asyncmy and aiosqlite in one round trip
  (:mod:`tyler_sql.fastappend`).
* A page of threads (``get``, ``list``, the lookups) is one statement that returns each message
  as a JSON document the database assembles (:mod:`tyler_sql.pages`), so it needs no transaction
  of its own (PostgreSQL and SQLite run it in autocommit; MariaDB sends a ``ROLLBACK`` with it,
  in the same query, to end the one it begins: :mod:`tyler_sql.driverfetch`). A page with
  attachments or reactions, and ``search``, read in one snapshot (PostgreSQL ``REPEATABLE
  READ``, MariaDB's default, SQLite's WAL read transaction), one query per table.
* Lookups use ``thread_keys`` digests; a source property's digest covers the source's name, so
  ``find_by_source(name, properties)`` follows the one selective digest.
* Each save checks the incarnation token in the same guarded ``UPDATE`` as the version
  (``AND incarnation = :token``); rows written before r0003 have none and are checked by
  version only.
* SQLite file writers of one store queue on an ``asyncio.Lock`` instead of in SQLite's busy
  handler, which sleeps.
* ``sqlite:///:memory:`` is one connection shared by the store's tasks, which take turns; it is
  private to the store (no ``shared_across_instances``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Self

from sqlalchemy import Select, delete, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from typing_extensions import override

from tyler_core.backend import Capabilities, StorageBackend
from tyler_core.changes import ThreadChanges
from tyler_core.errors import ConcurrencyError, ThreadNotFoundError
from tyler_core.models import Message, Thread
from tyler_core.settings import StoreOptions, refuse_extra_options
from tyler_core.urls import mask_url
from tyler_sql.driverfetch import driver_fetch
from tyler_sql.engine import STATEMENT_OPTION, WRITE_OPTION, build_engine, is_memory, sqlalchemy_url
from tyler_sql.fastappend import fast_appender
from tyler_sql.fastwrite import fast_writer, shape_of
from tyler_sql.migrate import drop_namespace, prepare_schema, schema_lock
from tyler_sql.pages import PageReader
from tyler_sql.rows import (
    ATTRIBUTE,
    SOURCE,
    file_rows,
    key_digest,
    key_rows,
    message_row,
    reaction_rows,
    source_digests,
    thread_row,
)
from tyler_sql.schema import build_tables
from tyler_sql.search import matching_messages
from tyler_sql.sizes import namespace_size
from tyler_sql.statements import Statements

__all__ = ["SQLBackend"]

logger = logging.getLogger("tyler_sql")

# Ids per IN (...) list: far below every driver's limit on bound parameters.
_CHUNK = 500
_MYSQL = ("mysql", "mariadb")


def _chunks(items: Sequence[str]) -> list[Sequence[str]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


def _held(lock: asyncio.Lock | None) -> contextlib.AbstractAsyncContextManager[Any]:
    return contextlib.nullcontext() if lock is None else lock


class SQLBackend(StorageBackend):
    """The SQL backend. Build it with :meth:`from_url`; ``engine`` is its ``AsyncEngine``."""

    capabilities = Capabilities(search=True, shared_across_instances=True)

    def __init__(self, url: str, options: StoreOptions) -> None:
        sa_url = sqlalchemy_url(url)
        self._url = url
        self._options = options
        self._tables = build_tables(options.namespace)
        self._engine = build_engine(sa_url, options)
        self._dialect = self._engine.dialect.name
        self._pages = PageReader(self._tables, self._dialect, driver_fetch(self._engine.dialect))
        self._sql = Statements(self._tables, self._dialect)
        memory = is_memory(sa_url)
        if memory:
            self.capabilities = Capabilities(search=True, shared_across_instances=False)
        # One shared connection cannot hold two transactions: the store's tasks take turns.
        self._turns: asyncio.Lock | None = asyncio.Lock() if memory else None
        # A SQLite file has one writer at a time: this store's writers queue here instead of in
        # SQLite's busy handler, which sleeps (other processes still meet the busy timeout).
        self._writers: asyncio.Lock | None = (
            asyncio.Lock() if self._dialect == "sqlite" and not memory else None
        )
        write_options: dict[str, Any] = {WRITE_OPTION: True}
        read_options: dict[str, Any] = {}
        # MySQL/MariaDB writers run at READ COMMITTED: set per transaction in engine.py.
        if self._dialect == "postgresql":
            # A page is read in several queries: they must see one snapshot.
            read_options["isolation_level"] = "REPEATABLE READ"
        self._write_engine: AsyncEngine = self._engine.execution_options(**write_options)
        self._read_engine: AsyncEngine = self._engine.execution_options(**read_options)
        # Reads of one statement need no transaction: none on SQLite, AUTOCOMMIT on PostgreSQL
        # (no BEGIN and COMMIT round trips). MariaDB keeps its transaction: switching
        # autocommit on and off would cost a round trip each.
        self._statement_engine = self._read_engine
        if self._dialect == "postgresql":
            self._statement_engine = self._engine.execution_options(isolation_level="AUTOCOMMIT")
        elif self._dialect == "sqlite":
            self._statement_engine = self._engine.execution_options(**{STATEMENT_OPTION: True})
        # The common saves (a new thread, messages appended) in the fewest round trips.
        self._fast = fast_writer(self._tables, self._engine)
        self._appender = fast_appender(self._tables, self._engine, self._fast)
        self._opened = False
        self._min_token = 1

    @classmethod
    @override
    def from_url(cls, url: str, options: StoreOptions) -> Self:
        refuse_extra_options(options, "the SQL backend")
        return cls(url, options)

    @property
    @override
    def engine(self) -> AsyncEngine:
        return self._engine

    # -- connections ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def writer(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a write transaction, committed on success, rolled back on error."""
        async with (
            _held(self._turns),
            _held(self._writers),
            self._write_engine.begin() as connection,
        ):
            yield connection

    @contextlib.asynccontextmanager
    async def reader(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a read transaction (one consistent snapshot)."""
        async with _held(self._turns), self._read_engine.begin() as connection:
            yield connection

    @contextlib.asynccontextmanager
    async def _statement(self) -> AsyncIterator[AsyncConnection]:
        # A connection for reads of one statement each (see __init__). Not begin(): a read
        # has nothing to commit, and closing the connection rolls back what the driver began
        # (MariaDB) in one round trip, where a COMMIT would be followed by the pool's rollback.
        async with _held(self._turns), self._statement_engine.connect() as connection:
            yield connection

    async def _read(
        self, page: Select[Any], parameters: dict[str, Any] | None = None
    ) -> list[Thread]:
        """The threads of a :class:`~tyler_sql.pages.PageReader` statement: one statement on
        its own, unless the page has attachments or reactions to read in the same snapshot."""
        if self._pages.fetches:
            # On a pooled connection of its own, without SQLAlchemy's Connection around it:
            # on MariaDB too, a page with attachments is then read again in reader().
            async with _held(self._turns):
                found = await self._pages.load_alone(self._engine, page, parameters)
        else:
            snapshot = self._statement_engine is self._read_engine
            async with self._statement() as connection:
                found = await self._pages.load(connection, page, parameters, snapshot=snapshot)
        if found is None:
            async with self.reader() as connection:
                found = await self._pages.load(connection, page, parameters, snapshot=True)
        assert found is not None
        return found

    # -- lifecycle -----------------------------------------------------------------------------

    @override
    async def open(self) -> None:
        if self._opened:
            return
        async with self.writer() as connection, schema_lock(connection, self._options.namespace):
            await connection.run_sync(prepare_schema, self._tables, self._url)
            if self._dialect in _MYSQL:
                # Shorter words are not in the FULLTEXT index: search checks them without it.
                size = await connection.scalar(text("SELECT @@innodb_ft_min_token_size"))
                self._min_token = int(size or 1)
        self._opened = True
        logger.debug(
            "opened namespace %r on %s (%s)",
            self._options.namespace,
            mask_url(self._url),
            self._dialect,
        )

    @override
    async def close(self) -> None:
        await self._engine.dispose()

    @override
    async def purge(self) -> None:
        t = self._tables
        async with self.writer() as connection:
            for table in (t.reactions, t.files, t.keys, t.messages, t.threads):
                await connection.execute(delete(table))
        logger.debug("purged namespace %r", self._options.namespace)

    @override
    async def drop(self) -> None:
        """Drop the namespace's tables: the conformance suite's throwaway namespaces leave
        nothing behind. The store must be reopened (a new one) to be used again."""
        async with self.writer() as connection:
            await connection.run_sync(drop_namespace, self._options.namespace)
        self._opened = False
        logger.debug("dropped the tables of namespace %r", self._options.namespace)

    @override
    async def storage_size(self) -> int | None:
        async with self.writer() as connection:  # MariaDB's ANALYZE TABLE is not read-only
            return await namespace_size(connection, self._tables, self._dialect)

    # -- writes --------------------------------------------------------------------------------

    async def _insert_new(self, connection: AsyncConnection, row: dict[str, Any]) -> bool:
        """Insert a new thread row; ``False`` if the id is taken."""
        if self._dialect in _MYSQL:
            # MariaDB has no "do nothing on conflict" that ignores only that conflict.
            try:
                async with connection.begin_nested():
                    await connection.execute(self._sql.insert_thread, row)
            except IntegrityError:
                return False
            return True
        return (await connection.execute(self._sql.insert_thread, row)).first() is not None

    async def _guarded_update(
        self, connection: AsyncConnection, changes: ThreadChanges, expected: int
    ) -> None:
        header = changes.full or changes.thread_changed
        token = changes.expected_incarnation
        # Another thread stored under this id after a delete has another token (or none).
        check_token = bool(expected) and token is not None
        # Over a stored version 0 (written with preserve=True), this write creates the thread.
        set_token = not expected
        values: dict[str, Any] = {
            "b_thread_id": changes.thread.id,
            "b_expected": expected,
            "b_version": changes.version,
            "b_updated_at": changes.updated_at,
        }
        if header:
            thread = changes.thread
            values.update(
                b_title=thread.title,
                b_created_at=thread.created_at,
                b_attributes=thread.attributes,
                b_source=thread.source,
            )
        if check_token:
            values["b_token"] = token
        if set_token:
            values["b_incarnation"] = changes.incarnation
        statement = self._sql.guarded_update(
            header=header, check_token=check_token, set_token=set_token
        )
        result = await connection.execute(statement, values)
        if result.rowcount != 1:
            raise ConcurrencyError(
                f"thread {changes.thread.id!r} is not at version {expected} any more "
                "(changed, deleted or stored again since it was loaded); reload it and save again"
            )

    @override
    async def write(self, changes: ThreadChanges) -> None:
        fast = self._fast
        shape = shape_of(changes) if fast is not None else None
        if fast is not None and shape is not None:
            async with _held(self._turns), _held(self._writers):
                if await fast.write(changes, shape):
                    return
            # Nothing written: a new thread whose id is taken (the statements below tell which
            # case it is), or a connection the fast save could not use.
        await self._write_statements(changes)

    async def _write_statements(self, changes: ThreadChanges) -> None:
        sql = self._sql
        thread_id = changes.thread.id
        by_id = {"b_thread_id": thread_id}
        expected = changes.expected_version
        async with self.writer() as connection:
            stored = True
            if expected is None:
                await connection.execute(sql.upsert_thread, self._thread_row(changes))
            elif expected == 0 and await self._insert_new(connection, self._thread_row(changes)):
                stored = False
            else:
                # Also a "new" thread whose id is taken: only a stored version 0 (written with
                # preserve=True) lets it through, as the contract says.
                await self._guarded_update(connection, changes, expected)
            # A thread that was not stored is written whole, even from a change set (the
            # snapshot of a version-0 thread that was deleted since, as the memory backend does).
            whole = changes.full or not stored
            if whole:
                if stored:
                    await connection.execute(sql.delete_messages, by_id)
                written: Sequence[Message] = changes.messages
            else:
                gone = [*changes.removed, *(m.id for m in changes.changed)]
                for ids in _chunks(gone):
                    await connection.execute(
                        sql.delete_some_messages, {"b_thread_id": thread_id, "b_ids": list(ids)}
                    )
                written = [*changes.added, *changes.changed]
            await self._insert_messages(connection, thread_id, written)
            if whole or changes.thread_changed:
                if stored:
                    await connection.execute(sql.delete_keys, by_id)
                keys = key_rows(thread_id, changes.thread.attributes, changes.thread.source)
                if keys:
                    await connection.execute(sql.insert_keys, keys)

    @staticmethod
    def _thread_row(changes: ThreadChanges) -> dict[str, Any]:
        return thread_row(
            changes.thread,
            version=changes.version,
            updated_at=changes.updated_at,
            incarnation=changes.incarnation,
        )

    async def _insert_messages(
        self, connection: AsyncConnection, thread_id: str, messages: Sequence[Message]
    ) -> None:
        if not messages:
            return
        sql = self._sql
        await connection.execute(sql.insert_messages, [message_row(thread_id, m) for m in messages])
        files = file_rows(thread_id, messages)
        if files:
            await connection.execute(sql.insert_files, files)
        reactions = reaction_rows(thread_id, messages)
        if reactions:
            await connection.execute(sql.insert_reactions, reactions)

    @override
    async def append(
        self,
        thread_id: str,
        messages: Sequence[Message],
        *,
        updated_at: datetime,
    ) -> list[Message]:
        appender = self._appender
        if appender is not None:
            async with _held(self._turns), _held(self._writers):
                added = await appender.append(thread_id, messages, updated_at=updated_at)
            if added is not None:
                return added
            # Nothing written: attachments or reactions, a taken id (named below), or a
            # connection the fast append could not use.
        return await self._append_statements(thread_id, messages, updated_at=updated_at)

    async def _append_statements(
        self, thread_id: str, messages: Sequence[Message], *, updated_at: datetime
    ) -> list[Message]:
        sql = self._sql
        by_id = {"b_thread_id": thread_id}
        async with self.writer() as connection:
            if (await connection.execute(sql.lock_thread, by_id)).first() is None:
                raise ThreadNotFoundError(f"no thread {thread_id!r}")
            for ids in _chunks([m.id for m in messages]):
                taken = await connection.scalar(
                    sql.taken_message, {"b_thread_id": thread_id, "b_ids": list(ids)}
                )
                if taken is not None:
                    raise ValueError(f"thread {thread_id!r} already has a message {taken!r}")
            highest = await connection.scalar(sql.highest_sequence, by_id)
            added = []
            for offset, message in enumerate(messages, start=1):
                copy = message.model_copy(deep=True)
                copy.sequence = (highest or 0) + offset
                added.append(copy)
            await connection.execute(
                sql.bump_version, {"b_thread_id": thread_id, "b_updated_at": updated_at}
            )
            await self._insert_messages(connection, thread_id, added)
        return added

    @override
    async def delete(self, thread_id: str) -> bool:
        async with self.writer() as connection:
            # Messages, attachments, reactions and lookup keys go with it (ON DELETE CASCADE).
            result = await connection.execute(self._sql.delete_thread, {"b_thread_id": thread_id})
        return bool(result.rowcount)

    # -- reads ---------------------------------------------------------------------------------

    @override
    async def get(self, thread_id: str) -> Thread | None:
        found = await self._read(self._pages.by_id, {"b_thread_id": thread_id})
        return found[0] if found else None

    @override
    async def list_page(self, *, limit: int | None, offset: int) -> list[Thread]:
        if limit == 0:
            return []
        return await self._read(*self._pages.lookup((), limit, offset))

    @override
    async def find_by_attributes(
        self, attributes: Mapping[str, Any], *, limit: int | None, offset: int
    ) -> list[Thread]:
        if limit == 0:
            return []
        digests = [key_digest(ATTRIBUTE, key, value) for key, value in attributes.items()]
        return await self._read(*self._pages.lookup(digests, limit, offset, kind=ATTRIBUTE))

    @override
    async def find_by_source(
        self,
        name: str,
        properties: Mapping[str, Any],
        *,
        limit: int | None,
        offset: int,
    ) -> list[Thread]:
        if limit == 0:
            return []
        digests = source_digests(name, properties)
        # A source's name alone is seldom selective (see PageReader.lookup).
        kind = SOURCE if properties else None
        return await self._read(*self._pages.lookup(digests, limit, offset, kind=kind))

    @override
    async def count(self) -> int:
        async with self._statement() as connection:
            total = await connection.scalar(select(func.count()).select_from(self._tables.threads))
        return int(total or 0)

    @override
    async def search(
        self, words: Sequence[str], *, limit: int, offset: int
    ) -> tuple[list[Thread], int]:
        t = self._tables
        match = matching_messages(
            t.messages, t.namespace, self._dialect, words, min_token=self._min_token
        )
        condition = t.threads.c.id.in_(select(t.messages.c.thread_id).where(match))
        async with self.reader() as connection:
            total = await connection.scalar(
                select(func.count()).select_from(t.threads).where(condition)
            )
            page = self._pages.page([condition], limit, offset)
            threads = await self._pages.load(connection, page, snapshot=True) if limit else []
        return threads or [], int(total or 0)
