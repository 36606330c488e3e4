"""The SQL schema of one namespace: tables prefixed ``{namespace}_``, the same on every dialect.

What the column types guarantee (see DESIGN.md, "Backends"):

* ids compare by code point: ``COLLATE "C"`` on PostgreSQL, ``utf8mb4_bin`` on MariaDB, SQLite's
  default ``BINARY``;
* times are UTC with microseconds: ``timestamptz`` on PostgreSQL, ``DATETIME(6)`` on MariaDB and
  fixed-width ISO text on SQLite (which has no date type, and where sorting text must sort time);
* documents are JSON text, never JSONB (which rewrites ``1e16`` and refuses ``\\u0000``), in
  ``LONGTEXT`` on MariaDB, whose ``TEXT`` stops at 64 KB.

``thread_keys`` holds one row per top-level key of a thread's ``attributes`` and ``source``,
found by the SHA-256 ``digest`` of ``(kind, key, canonical JSON value)``: a fixed-width, indexed
lookup that stays flat as threads grow and fits MariaDB's index key limits whatever the length of
a key or value. The digest of a source property other than ``name`` also covers the source's
name, so a lookup by source name and property is driven by that one selective digest instead of
every thread of the source (see :func:`tyler_sql.rows.key_rows`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Dialect,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = [
    "JSONText",
    "LongText",
    "SearchText",
    "Tables",
    "UTCDateTime",
    "ascii_type",
    "build_tables",
    "id_type",
    "include_name",
]

_MYSQL = ("mysql", "mariadb")

#: Free text: ``LONGTEXT`` on MariaDB (its ``TEXT`` holds 64 KB), ``TEXT`` elsewhere.
LongText: TypeEngine[str] = Text().with_variant(mysql.LONGTEXT(), *_MYSQL)


#: Search words: compared exactly (binary) on MariaDB, whose default collation folds accents.
SearchText: TypeEngine[str] = Text().with_variant(
    mysql.LONGTEXT(charset="utf8mb4", collation="utf8mb4_bin"), *_MYSQL
)


class _Id(TypeDecorator[str]):
    """Ids compared byte for byte, in code point order, trailing spaces included."""

    impl = String(255)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(String(255, collation="C"))
        if dialect.name in _MYSQL:
            # MariaDB's utf8mb4_bin pads: it would take "a" and "a " for one id. The NO PAD
            # binary collations compare every byte (MySQL 8 names its one utf8mb4_0900_bin).
            mariadb = getattr(dialect, "is_mariadb", True)
            collation = "utf8mb4_nopad_bin" if mariadb else "utf8mb4_0900_bin"
            return dialect.type_descriptor(
                mysql.VARCHAR(255, charset="utf8mb4", collation=collation)
            )
        return dialect.type_descriptor(String(255))


def id_type() -> TypeEngine[str]:
    """Thread and message ids (1 to 255 characters) in a binary, code-point-ordered collation."""
    return _Id()


def ascii_type(length: int) -> TypeEngine[str]:
    """ASCII text (digests, roles): one byte per character within MariaDB's index limits."""
    return (
        String(length)
        .with_variant(String(length, collation="C"), "postgresql")
        .with_variant(mysql.VARCHAR(length, charset="ascii", collation="ascii_bin"), *_MYSQL)
    )


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime with microseconds on every dialect."""

    impl = String(26)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.TIMESTAMP(timezone=True, precision=6))
        if dialect.name in _MYSQL:
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(String(26))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        if dialect.name == "postgresql":
            return value
        naive = value.replace(tzinfo=None)
        if dialect.name in _MYSQL:
            return naive
        # "YYYY-MM-DDTHH:MM:SS.ffffff": fixed width, so text order is time order.
        return naive.isoformat(timespec="microseconds")

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Built once: json.dumps with options builds an encoder on every call.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


class JSONText(TypeDecorator[Any]):
    """A JSON value stored as text, exactly (SQL ``NULL`` for ``None``)."""

    impl = LongText
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return _encode(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else json.loads(value)


@dataclass(frozen=True, slots=True)
class Tables:
    """The tables of one namespace."""

    namespace: str
    metadata: MetaData
    threads: Table
    messages: Table
    files: Table
    reactions: Table
    keys: Table

    @property
    def version_table(self) -> str:
        """Alembic's version table of this namespace."""
        return f"{self.namespace}_alembic_version"


def build_tables(namespace: str) -> Tables:
    """The current schema of ``namespace`` (what the newest migration produces)."""
    p = f"{namespace}_"
    metadata = MetaData()
    threads = Table(
        f"{p}threads",
        metadata,
        Column("id", id_type(), primary_key=True),
        Column("title", LongText, nullable=True),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("updated_at", UTCDateTime(), nullable=False),
        Column("attributes", JSONText(), nullable=False),
        Column("source", JSONText(), nullable=True),
        Column("version", BigInteger(), nullable=False),
        # The incarnation token (NULL on rows from before r0003: checked by version only).
        Column("incarnation", ascii_type(32), nullable=True),
        Index(f"ix_{p}threads_updated", "updated_at", "id"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    messages = Table(
        f"{p}messages",
        metadata,
        # A surrogate key: on SQLite it is the rowid, which full-text search refers to and which,
        # unlike an implicit rowid, VACUUM never renumbers.
        Column(
            "pk",
            BigInteger().with_variant(Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        Column("thread_id", id_type(), nullable=False),
        Column("id", id_type(), nullable=False),
        Column("sequence", BigInteger(), nullable=False),
        Column("role", ascii_type(16), nullable=False),
        Column("content", JSONText(), nullable=True),
        Column("name", LongText, nullable=True),
        Column("tool_call_id", LongText, nullable=True),
        Column("tool_calls", JSONText(), nullable=True),
        Column("attributes", JSONText(), nullable=False),
        Column("timestamp", UTCDateTime(), nullable=False),
        Column("source", JSONText(), nullable=True),
        Column("metrics", JSONText(), nullable=False),
        # The message's distinct lowercase words, which each dialect's full-text index covers.
        Column("search_words", SearchText, nullable=True),
        # How many attachment and reaction rows the message has: a page whose messages have
        # none skips those tables.
        Column("attachment_count", Integer(), nullable=False, server_default=text("0")),
        Column("reaction_count", Integer(), nullable=False, server_default=text("0")),
        ForeignKeyConstraint(
            ["thread_id"], [threads.c.id], ondelete="CASCADE", name=f"fk_{p}messages_thread"
        ),
        UniqueConstraint("thread_id", "id", name=f"uq_{p}messages_id"),
        UniqueConstraint("thread_id", "sequence", name=f"uq_{p}messages_sequence"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    files = _child_table(metadata, f"{p}message_files", messages, p, "files")
    for column in (
        Column("filename", LongText, nullable=False),
        Column("mime_type", LongText, nullable=True),
        Column("file_id", LongText, nullable=True),
        Column("storage_path", LongText, nullable=True),
        Column("storage_backend", LongText, nullable=True),
        Column("status", ascii_type(16), nullable=False),
        Column("size", BigInteger(), nullable=True),
        Column("attributes", JSONText(), nullable=False),
    ):
        files.append_column(column)
    reactions = _child_table(metadata, f"{p}message_reactions", messages, p, "reactions")
    reactions.append_column(Column("emoji", LongText, nullable=False))
    reactions.append_column(Column("user_id", LongText, nullable=False))
    keys = Table(
        f"{p}thread_keys",
        metadata,
        Column("thread_id", id_type(), nullable=False),
        Column("digest", ascii_type(64), nullable=False),
        Column("kind", ascii_type(16), nullable=False),
        Column("key", LongText, nullable=False),
        Column("value", LongText, nullable=False),
        PrimaryKeyConstraint("thread_id", "digest"),
        ForeignKeyConstraint(
            ["thread_id"], [threads.c.id], ondelete="CASCADE", name=f"fk_{p}thread_keys_thread"
        ),
        Index(f"ix_{p}thread_keys_digest", "digest"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    return Tables(namespace, metadata, threads, messages, files, reactions, keys)


def _child_table(metadata: MetaData, name: str, messages: Table, p: str, what: str) -> Table:
    # Rows of a message's attachments or reactions, in their order (``position``).
    return Table(
        name,
        metadata,
        Column("thread_id", id_type(), nullable=False),
        Column("message_id", id_type(), nullable=False),
        Column("position", Integer(), nullable=False),
        PrimaryKeyConstraint("thread_id", "message_id", "position"),
        ForeignKeyConstraint(
            ["thread_id", "message_id"],
            [messages.c.thread_id, messages.c.id],
            ondelete="CASCADE",
            name=f"fk_{p}{what}_message",
        ),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )


def include_name(namespace: str) -> Callable[..., bool]:
    """An Alembic ``include_name`` hook: this namespace's tables and indexes only, without the
    full-text search objects, which are dialect-specific DDL outside the metadata."""
    tables = set(build_tables(namespace).metadata.tables)

    def include(name: str | None, type_: str, parent_names: Mapping[str, str | None]) -> bool:
        if type_ == "table":
            return name in tables
        if type_ == "index" and name is not None:
            return not name.startswith(f"ix_{namespace}_search")
        return True

    return include
