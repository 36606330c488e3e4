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
* ``append()`` locks the thread row (``SELECT ... FOR UPDATE``; SQLite: ``BEGIN IMMEDIATE``)
  before it reads the highest sequence.
* Reads run in one snapshot (PostgreSQL ``REPEATABLE READ``, MariaDB's default, SQLite's WAL
  read transaction) and load a page in one query per table.
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

from sqlalchemy import ColumnElement, Select, delete, func, insert, select, text, update
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from typing_extensions import override

from tyler_core.backend import Capabilities, StorageBackend
from tyler_core.changes import ThreadChanges
from tyler_core.errors import ConcurrencyError, ThreadNotFoundError
from tyler_core.models import Message, Thread
from tyler_core.settings import StoreOptions
from tyler_core.urls import mask_url
from tyler_sql.engine import WRITE_OPTION, build_engine, is_memory, sqlalchemy_url
from tyler_sql.migrate import drop_namespace, prepare_schema, schema_lock
from tyler_sql.rows import (
    ATTRIBUTE,
    SOURCE,
    file_rows,
    key_digest,
    key_rows,
    message_row,
    reaction_rows,
    thread_row,
    to_messages,
    to_thread,
)
from tyler_sql.schema import build_tables
from tyler_sql.search import matching_messages

__all__ = ["SQLBackend"]

logger = logging.getLogger("tyler_sql")

# Ids per IN (...) list: far below every driver's limit on bound parameters.
_CHUNK = 500
_MYSQL = ("mysql", "mariadb")


def _chunks(items: Sequence[str]) -> list[Sequence[str]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


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
        memory = is_memory(sa_url)
        if memory:
            self.capabilities = Capabilities(search=True, shared_across_instances=False)
        # One shared connection cannot hold two transactions: the store's tasks take turns.
        self._turns: asyncio.Lock | None = asyncio.Lock() if memory else None
        write_options: dict[str, Any] = {WRITE_OPTION: True}
        read_options: dict[str, Any] = {}
        # MySQL/MariaDB writers run at READ COMMITTED: set per transaction in engine.py.
        if self._dialect == "postgresql":
            # A page is read in several queries: they must see one snapshot.
            read_options["isolation_level"] = "REPEATABLE READ"
        self._write_engine: AsyncEngine = self._engine.execution_options(**write_options)
        self._read_engine: AsyncEngine = self._engine.execution_options(**read_options)
        self._opened = False
        self._min_token = 1

    @classmethod
    @override
    def from_url(cls, url: str, options: StoreOptions) -> Self:
        return cls(url, options)

    @property
    @override
    def engine(self) -> AsyncEngine:
        return self._engine

    # -- connections ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        if self._turns is None:
            yield
        else:
            async with self._turns:
                yield

    @contextlib.asynccontextmanager
    async def writer(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a write transaction, committed on success, rolled back on error."""
        async with self._turn(), self._write_engine.begin() as connection:
            yield connection

    @contextlib.asynccontextmanager
    async def reader(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a read transaction (one consistent snapshot)."""
        async with self._turn(), self._read_engine.begin() as connection:
            yield connection

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

    # -- writes --------------------------------------------------------------------------------

    def _upsert(self, row: dict[str, Any]) -> Any:
        threads = self._tables.threads
        values = {name: value for name, value in row.items() if name != "id"}
        if self._dialect in _MYSQL:
            statement = mysql.insert(threads).values(row)
            return statement.on_duplicate_key_update(**values)
        dialect = postgresql if self._dialect == "postgresql" else sqlite
        upsert = dialect.insert(threads).values(row)
        return upsert.on_conflict_do_update(index_elements=["id"], set_=values)

    async def _insert_new(self, connection: AsyncConnection, row: dict[str, Any]) -> bool:
        """Insert a new thread row; ``False`` if the id is taken."""
        threads = self._tables.threads
        if self._dialect in _MYSQL:
            # MariaDB has no "do nothing on conflict" that ignores only that conflict.
            try:
                async with connection.begin_nested():
                    await connection.execute(insert(threads), row)
            except IntegrityError:
                return False
            return True
        dialect = postgresql if self._dialect == "postgresql" else sqlite
        # RETURNING, not rowcount: psycopg reports -1 for INSERT ... ON CONFLICT DO NOTHING.
        statement = (
            dialect.insert(threads)
            .values(row)
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(threads.c.id)
        )
        return (await connection.execute(statement)).first() is not None

    async def _guarded_update(
        self, connection: AsyncConnection, changes: ThreadChanges, expected: int
    ) -> None:
        threads = self._tables.threads
        values: dict[str, Any] = {"version": changes.version, "updated_at": changes.updated_at}
        if changes.full or changes.thread_changed:
            header = changes.thread
            values.update(
                title=header.title,
                created_at=header.created_at,
                attributes=header.attributes,
                source=header.source,
            )
        result = await connection.execute(
            update(threads)
            .where(threads.c.id == changes.thread.id, threads.c.version == expected)
            .values(**values)
        )
        if result.rowcount != 1:
            raise ConcurrencyError(
                f"thread {changes.thread.id!r} is not at version {expected} any more "
                "(changed or deleted since it was loaded); reload it and save again"
            )

    @override
    async def write(self, changes: ThreadChanges) -> None:
        t = self._tables
        thread_id = changes.thread.id
        row = thread_row(changes.thread, version=changes.version, updated_at=changes.updated_at)
        expected = changes.expected_version
        async with self.writer() as connection:
            stored = True
            if expected is None:
                await connection.execute(self._upsert(row))
            elif expected == 0 and await self._insert_new(connection, row):
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
                    await connection.execute(
                        delete(t.messages).where(t.messages.c.thread_id == thread_id)
                    )
                written: Sequence[Message] = changes.messages
            else:
                gone = [*changes.removed, *(m.id for m in changes.changed)]
                for ids in _chunks(gone):
                    await connection.execute(
                        delete(t.messages).where(
                            t.messages.c.thread_id == thread_id, t.messages.c.id.in_(ids)
                        )
                    )
                written = [*changes.added, *changes.changed]
            await self._insert_messages(connection, thread_id, written)
            if whole or changes.thread_changed:
                if stored:
                    await connection.execute(delete(t.keys).where(t.keys.c.thread_id == thread_id))
                keys = key_rows(thread_id, changes.thread.attributes, changes.thread.source)
                if keys:
                    await connection.execute(insert(t.keys), keys)

    async def _insert_messages(
        self, connection: AsyncConnection, thread_id: str, messages: Sequence[Message]
    ) -> None:
        if not messages:
            return
        t = self._tables
        await connection.execute(insert(t.messages), [message_row(thread_id, m) for m in messages])
        files = file_rows(thread_id, messages)
        if files:
            await connection.execute(insert(t.files), files)
        reactions = reaction_rows(thread_id, messages)
        if reactions:
            await connection.execute(insert(t.reactions), reactions)

    @override
    async def append(
        self,
        thread_id: str,
        messages: Sequence[Message],
        *,
        updated_at: datetime,
    ) -> list[Message]:
        t = self._tables
        async with self.writer() as connection:
            query = select(t.threads.c.version).where(t.threads.c.id == thread_id)
            if self._dialect != "sqlite":  # SQLite's BEGIN IMMEDIATE already excludes writers
                query = query.with_for_update()
            if (await connection.execute(query)).first() is None:
                raise ThreadNotFoundError(f"no thread {thread_id!r}")
            for ids in _chunks([m.id for m in messages]):
                taken = await connection.scalar(
                    select(t.messages.c.id)
                    .where(t.messages.c.thread_id == thread_id, t.messages.c.id.in_(ids))
                    .limit(1)
                )
                if taken is not None:
                    raise ValueError(f"thread {thread_id!r} already has a message {taken!r}")
            highest = await connection.scalar(
                select(func.max(t.messages.c.sequence)).where(t.messages.c.thread_id == thread_id)
            )
            added = []
            for offset, message in enumerate(messages, start=1):
                copy = message.model_copy(deep=True)
                copy.sequence = (highest or 0) + offset
                added.append(copy)
            await connection.execute(
                update(t.threads)
                .where(t.threads.c.id == thread_id)
                .values(version=t.threads.c.version + 1, updated_at=updated_at)
            )
            await self._insert_messages(connection, thread_id, added)
        return added

    @override
    async def delete(self, thread_id: str) -> bool:
        threads = self._tables.threads
        async with self.writer() as connection:
            # Messages, attachments, reactions and lookup keys go with it (ON DELETE CASCADE).
            result = await connection.execute(delete(threads).where(threads.c.id == thread_id))
        return bool(result.rowcount)

    # -- reads ---------------------------------------------------------------------------------

    async def _load(self, connection: AsyncConnection, query: Select[Any]) -> list[Thread]:
        """The threads ``query`` selects, with their messages: one query per table."""
        t = self._tables
        rows = (await connection.execute(query)).mappings().all()
        if not rows:
            return []
        ids = [row["id"] for row in rows]
        message_columns = [c for c in t.messages.c if c.name not in ("pk", "search_words")]
        messages: list[Any] = []
        files: list[Any] = []
        reactions: list[Any] = []
        for chunk in _chunks(ids):
            for table, found, order in (
                (t.messages, messages, t.messages.c.sequence),
                (t.files, files, t.files.c.position),
                (t.reactions, reactions, t.reactions.c.position),
            ):
                columns = message_columns if table is t.messages else list(table.c)
                statement = (
                    select(*columns)
                    .where(table.c.thread_id.in_(chunk))
                    .order_by(table.c.thread_id, order)
                )
                found.extend((await connection.execute(statement)).mappings().all())
        by_thread = to_messages(messages, files, reactions)
        return [to_thread(row, by_thread.get(row["id"], [])) for row in rows]

    def _page(
        self, conditions: Sequence[ColumnElement[bool]], limit: int | None, offset: int
    ) -> Select[Any]:
        threads = self._tables.threads
        query = (
            select(threads)
            .where(*conditions)
            .order_by(threads.c.updated_at.desc(), threads.c.id.desc())
        )
        if limit is not None:
            query = query.limit(limit)
        if offset:
            query = query.offset(offset)
        return query

    @override
    async def get(self, thread_id: str) -> Thread | None:
        threads = self._tables.threads
        async with self.reader() as connection:
            found = await self._load(connection, select(threads).where(threads.c.id == thread_id))
        return found[0] if found else None

    @override
    async def list_page(self, *, limit: int | None, offset: int) -> list[Thread]:
        if limit == 0:
            return []
        async with self.reader() as connection:
            return await self._load(connection, self._page((), limit, offset))

    def _has_keys(self, kind: str, wanted: Mapping[str, Any]) -> list[ColumnElement[bool]]:
        t = self._tables
        return [
            t.threads.c.id.in_(
                select(t.keys.c.thread_id).where(t.keys.c.digest == key_digest(kind, key, value))
            )
            for key, value in wanted.items()
        ]

    @override
    async def find_by_attributes(
        self, attributes: Mapping[str, Any], *, limit: int | None, offset: int
    ) -> list[Thread]:
        if limit == 0:
            return []
        conditions = self._has_keys(ATTRIBUTE, attributes)
        async with self.reader() as connection:
            return await self._load(connection, self._page(conditions, limit, offset))

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
        conditions = self._has_keys(SOURCE, {"name": name}) + self._has_keys(SOURCE, properties)
        async with self.reader() as connection:
            return await self._load(connection, self._page(conditions, limit, offset))

    @override
    async def count(self) -> int:
        async with self.reader() as connection:
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
            threads = (
                await self._load(connection, self._page([condition], limit, offset))
                if limit
                else []
            )
        return threads, int(total or 0)
