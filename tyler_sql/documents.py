"""A thread or message row as one JSON document, put together by the database.

The JSON columns hold the exact text the store wrote, so a message's document is those texts
spliced between its keys, with the plain columns quoted by the database's own JSON function
(PostgreSQL ``to_json``, MariaDB ``JSON_QUOTE``, SQLite ``json_quote``). The driver then hands
over one string per message instead of a dozen values to convert, and pydantic decodes a whole
page of them in one ``validate_json`` call (:mod:`tyler_sql.pages`).

Times are ISO text: PostgreSQL's ``to_json`` of a ``timestamptz`` (with its offset), MariaDB's
``DATE_FORMAT`` of the UTC ``DATETIME(6)``, SQLite's stored text, both marked ``Z``.
"""

from __future__ import annotations

from functools import reduce
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    String,
    Table,
    Text,
    bindparam,
    cast,
    func,
    literal_column,
)
from sqlalchemy import type_coerce as coerce

__all__ = ["message_document", "thread_document"]

_MYSQL = ("mysql", "mariadb")
# DATE_FORMAT's pattern, bound (a literal % would need escaping for the driver's paramstyle).
_MYSQL_TIME = "%Y-%m-%dT%H:%i:%s.%f"


def _literal(text: str) -> ColumnElement[str]:
    # Inline SQL text: none of the pieces holds a quote or a percent sign.
    return literal_column(f"'{text}'", String())


def _quoted(column: ColumnElement[Any], dialect: str) -> ColumnElement[str]:
    """A text column as a JSON string (``null`` for SQL ``NULL``)."""
    quoted: ColumnElement[str]
    if dialect == "postgresql":
        quoted = cast(func.to_json(column), Text())
    else:
        quoted = func.json_quote(column, type_=String())
    return _or_null(quoted) if _nullable(column) else quoted


def _json(column: ColumnElement[Any]) -> ColumnElement[str]:
    """A JSON text column as stored (``null`` for SQL ``NULL``)."""
    text = coerce(column, String())
    return _or_null(text) if _nullable(column) else text


def _nullable(column: ColumnElement[Any]) -> bool:
    # A subquery's column is nullable when the table's column it selects is.
    return all(getattr(c, "nullable", True) for c in column.base_columns)


def _or_null(value: ColumnElement[str]) -> ColumnElement[str]:
    return func.coalesce(value, _literal("null"), type_=String())


def _time(column: ColumnElement[Any], dialect: str) -> ColumnElement[str]:
    if dialect == "postgresql":
        return cast(func.to_json(column), Text())
    formatted: ColumnElement[str]
    if dialect in _MYSQL:
        pattern: BindParameter[str] = bindparam("b_time_format", _MYSQL_TIME)
        formatted = func.date_format(column, pattern, type_=String())
    else:
        formatted = coerce(column, String())
    return _concat([_literal('"'), formatted, _literal('Z"')], dialect)


def _concat(parts: list[ColumnElement[str]], dialect: str) -> ColumnElement[str]:
    if dialect in _MYSQL:
        return func.concat(*parts, type_=String())
    return reduce(lambda left, right: left.concat(right), parts)


def message_document(messages: Table, dialect: str) -> ColumnElement[str]:
    """The JSON document of a ``messages`` row: every field of the message but its attachments
    and reactions, which live in their own tables."""
    c = messages.c
    parts: list[ColumnElement[str]] = [
        _literal('{"id":'),
        _quoted(c.id, dialect),
        _literal(',"role":"'),
        coerce(c.role, String()),
        _literal('","sequence":'),
        cast(c.sequence, String()),
        _literal(',"content":'),
        _json(c.content),
        _literal(',"name":'),
        _quoted(c.name, dialect),
        _literal(',"tool_call_id":'),
        _quoted(c.tool_call_id, dialect),
        _literal(',"tool_calls":'),
        _json(c.tool_calls),
        _literal(',"attributes":'),
        _json(c.attributes),
        _literal(',"timestamp":'),
        _time(c.timestamp, dialect),
        _literal(',"source":'),
        _json(c.source),
        _literal(',"metrics":'),
        _json(c.metrics),
        _literal("}"),
    ]
    return _concat(parts, dialect).label("document")


def thread_document(columns: Any, dialect: str) -> ColumnElement[str]:
    """The JSON document of a ``threads`` row (``columns``: the table's, or a subquery's of
    them): every field of the thread but its messages."""
    c = columns
    parts: list[ColumnElement[str]] = [
        _literal('{"id":'),
        _quoted(c.id, dialect),
        _literal(',"title":'),
        _quoted(c.title, dialect),
        _literal(',"created_at":'),
        _time(c.created_at, dialect),
        _literal(',"updated_at":'),
        _time(c.updated_at, dialect),
        _literal(',"attributes":'),
        _json(c.attributes),
        _literal(',"source":'),
        _json(c.source),
        _literal(',"version":'),
        cast(c.version, String()),
        _literal("}"),
    ]
    return _concat(parts, dialect).label("head")
