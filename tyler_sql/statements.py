"""The write statements of one namespace, built once.

A statement object built per call costs more than its round trip on a local server (SQLAlchemy
constructs it and computes its cache key every time); these are built when the backend is, take
their values as bound parameters (``b_*``, apart from the column names SQLAlchemy reserves), and
hit the compiled cache on every execution. The few shapes that vary (which columns a thread
update sets, how many lookup digests a query has) are built on first use and kept.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Delete,
    Insert,
    Select,
    Update,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite

from tyler_sql.schema import Tables

__all__ = ["HEADER_COLUMNS", "Statements"]

_MYSQL = ("mysql", "mariadb")

#: The ``threads`` columns a save that changed the thread's fields sets.
HEADER_COLUMNS = ("title", "created_at", "attributes", "source")


class Statements:
    """Prepared statement objects of one namespace on one dialect."""

    def __init__(self, tables: Tables, dialect: str) -> None:
        self._tables = tables
        self._dialect = dialect
        t = tables
        threads, messages, keys = t.threads, t.messages, t.keys
        thread_id: BindParameter[str] = bindparam("b_thread_id")
        self.insert_thread: Insert = insert(threads)
        if dialect not in _MYSQL:
            dialect_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            # RETURNING, not rowcount: psycopg reports -1 for INSERT ... ON CONFLICT DO NOTHING.
            self.insert_thread = (
                dialect_insert(threads)
                .on_conflict_do_nothing(index_elements=["id"])
                .returning(threads.c.id)
            )
        self.upsert_thread = self._upsert()
        self.delete_thread: Delete = delete(threads).where(threads.c.id == thread_id)
        self.bump_version: Update = (
            update(threads)
            .where(threads.c.id == thread_id)
            .values(
                version=threads.c.version + 1,
                updated_at=bindparam("b_updated_at", type_=threads.c.updated_at.type),
            )
        )
        lock = select(threads.c.version).where(threads.c.id == thread_id)
        # SQLite's BEGIN IMMEDIATE already excludes other writers.
        self.lock_thread: Select[Any] = lock if dialect == "sqlite" else lock.with_for_update()
        self.insert_messages: Insert = insert(messages)
        self.insert_files: Insert = insert(t.files)
        self.insert_reactions: Insert = insert(t.reactions)
        self.delete_messages: Delete = delete(messages).where(messages.c.thread_id == thread_id)
        self.delete_some_messages: Delete = delete(messages).where(
            messages.c.thread_id == thread_id,
            messages.c.id.in_(bindparam("b_ids", expanding=True)),
        )
        self.taken_message: Select[Any] = (
            select(messages.c.id)
            .where(
                messages.c.thread_id == thread_id,
                messages.c.id.in_(bindparam("b_ids", expanding=True)),
            )
            .limit(1)
        )
        self.highest_sequence: Select[Any] = select(func.max(messages.c.sequence)).where(
            messages.c.thread_id == thread_id
        )
        self.insert_keys: Insert = insert(keys)
        self.delete_keys: Delete = delete(keys).where(keys.c.thread_id == thread_id)
        self._updates: dict[tuple[bool, bool, bool], Update] = {}

    def _upsert(self) -> Insert:
        threads = self._tables.threads
        columns = [c.name for c in threads.c if c.name != "id"]
        if self._dialect in _MYSQL:
            statement = mysql.insert(threads)
            return statement.on_duplicate_key_update(
                {name: statement.inserted[name] for name in columns}
            )
        dialect_insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
        upsert = dialect_insert(threads)
        return upsert.on_conflict_do_update(
            index_elements=["id"], set_={name: upsert.excluded[name] for name in columns}
        )

    def guarded_update(self, *, header: bool, check_token: bool, set_token: bool) -> Update:
        """``UPDATE threads ... WHERE id = :b_thread_id AND version = :b_expected`` (and
        ``incarnation = :b_token`` with ``check_token``), setting ``version`` and ``updated_at``,
        the :data:`HEADER_COLUMNS` with ``header``, ``incarnation`` with ``set_token``."""
        shape = (header, check_token, set_token)
        statement = self._updates.get(shape)
        if statement is None:
            threads = self._tables.threads
            guard: list[ColumnElement[bool]] = [
                threads.c.id == bindparam("b_thread_id"),
                threads.c.version == bindparam("b_expected"),
            ]
            if check_token:
                guard.append(threads.c.incarnation == bindparam("b_token"))
            names = ["version", "updated_at"]
            if header:
                names += HEADER_COLUMNS
            if set_token:
                names.append("incarnation")
            values = {name: bindparam(f"b_{name}", type_=threads.c[name].type) for name in names}
            statement = update(threads).where(*guard).values(values)
            self._updates[shape] = statement
        return statement
