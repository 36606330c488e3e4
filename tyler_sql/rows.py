"""Models to rows, and the digests of the attribute and source lookups (rows back to models:
:mod:`tyler_sql.pages`)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from json.encoder import encode_basestring
from typing import Any

from tyler_core.jsonvalues import canonical_json
from tyler_core.models import Message, Thread
from tyler_sql.search import search_words

__all__ = [
    "KEY_COLUMNS",
    "MESSAGE_COLUMNS",
    "file_rows",
    "key_digest",
    "key_rows",
    "key_values",
    "message_row",
    "message_values",
    "reaction_rows",
    "source_digest",
    "source_digests",
    "thread_row",
]

ATTRIBUTE = "attribute"
SOURCE = "source"


# A JSON string as ``json.JSONEncoder(ensure_ascii=False)`` writes it (in an array too): the
# digests' arrays are built from it directly, without the encoder's per-call set-up.
_quote = encode_basestring
_QUOTED_ATTRIBUTE = _quote(ATTRIBUTE)
_QUOTED_SOURCE = _quote(SOURCE)


def _canonical(value: Any) -> str:
    # canonical_json of a string is its JSON string.
    return _quote(value) if type(value) is str else canonical_json(value)


def key_digest(kind: str, key: str, value: Any) -> str:
    """The lookup digest of one top-level key: SHA-256 of ``[kind, key, canonical value]``.

    The JSON array makes the encoding unambiguous, and canonical JSON makes equal values (rule 7:
    type-strict, numbers by value, objects regardless of key order) share one digest.
    """
    return _key_digest(_quote(kind), key, _canonical(value))


def source_digest(name: str | None, key: str, value: Any) -> str:
    """The lookup digest of a source property other than ``name``: SHA-256 of ``["source",
    canonical name, key, canonical value]`` (``name``: the canonical JSON of the source's
    ``name``, ``None`` for a source without one).

    Covering the name makes this one digest as selective as the source name and the property
    together: a lookup by both reads only the threads that have both.
    """
    return _source_digest(_source_name(name), key, _canonical(value))


# The JSON arrays hashed, as ``json.JSONEncoder(ensure_ascii=False).encode`` writes them (items
# separated by ", "): kind and source name come quoted.
def _key_digest(quoted_kind: str, key: str, canonical: str) -> str:
    encoded = f"[{quoted_kind}, {_quote(key)}, {_quote(canonical)}]"
    return hashlib.sha256(encoded.encode("utf-8", "surrogatepass")).hexdigest()


def _source_digest(quoted_name: str, key: str, canonical: str) -> str:
    encoded = f"[{_QUOTED_SOURCE}, {quoted_name}, {_quote(key)}, {_quote(canonical)}]"
    return hashlib.sha256(encoded.encode("utf-8", "surrogatepass")).hexdigest()


def _source_name(name: str | None) -> str:
    return "null" if name is None else _quote(name)


def source_digests(name: str, properties: Mapping[str, Any]) -> list[str]:
    """The digests a thread whose source has ``name`` and every one of ``properties`` holds."""
    canonical_name = canonical_json(name)
    digests = [
        key_digest(SOURCE, key, value)
        if key == "name"
        else source_digest(canonical_name, key, value)
        for key, value in properties.items()
    ]
    if all(key == "name" for key in properties):
        # Any other property's digest already implies the name.
        digests.append(key_digest(SOURCE, "name", name))
    return digests


#: The ``thread_keys`` columns of :func:`key_values`, after ``thread_id``.
KEY_COLUMNS = ("digest", "kind", "key", "value")


def key_values(
    attributes: Mapping[str, Any], source: Mapping[str, Any] | None
) -> list[tuple[str, str, str, str]]:
    """One ``thread_keys`` row per top-level key of ``attributes`` and ``source``, without
    ``thread_id``: the values of :data:`KEY_COLUMNS`."""
    rows = []
    for key, value in attributes.items():
        canonical = _canonical(value)
        digest = _key_digest(_QUOTED_ATTRIBUTE, key, canonical)
        rows.append((digest, ATTRIBUTE, key, canonical))
    if source:
        name = _source_name(_canonical(source["name"]) if "name" in source else None)
        for key, value in source.items():
            canonical = _canonical(value)
            if key == "name":
                digest = _key_digest(_QUOTED_SOURCE, key, canonical)
            else:
                digest = _source_digest(name, key, canonical)
            rows.append((digest, SOURCE, key, canonical))
    return rows


def key_rows(
    thread_id: str, attributes: Mapping[str, Any], source: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """One ``thread_keys`` row per top-level key of ``attributes`` and ``source``."""
    return [
        {"thread_id": thread_id, "digest": digest, "kind": kind, "key": key, "value": value}
        for digest, kind, key, value in key_values(attributes, source)
    ]


def thread_row(
    thread: Thread, *, version: int, updated_at: Any, incarnation: str | None
) -> dict[str, Any]:
    """The ``threads`` row (all columns)."""
    return {
        "id": thread.id,
        "title": thread.title,
        "created_at": thread.created_at,
        "updated_at": updated_at,
        "attributes": thread.attributes,
        "source": thread.source,
        "version": version,
        "incarnation": incarnation,
    }


#: The ``messages`` columns of :func:`message_values`: all but ``pk`` and ``thread_id``.
MESSAGE_COLUMNS = (
    "id",
    "sequence",
    "role",
    "content",
    "name",
    "tool_call_id",
    "tool_calls",
    "attributes",
    "timestamp",
    "source",
    "metrics",
    "search_words",
    "attachment_count",
    "reaction_count",
)


def message_values(message: Message) -> list[Any]:
    """The values of :data:`MESSAGE_COLUMNS` for a message, in that order (Python values:
    documents and times as they are, not yet bound for a dialect)."""
    return [
        message.id,
        message.sequence,
        message.role,
        message.content,
        message.name,
        message.tool_call_id,
        message.tool_calls,
        message.attributes,
        message.timestamp,
        message.source,
        message.metrics,
        search_words(message),
        len(message.attachments),
        sum(len(users) for users in message.reactions.values()) if message.reactions else 0,
    ]


def message_row(thread_id: str, message: Message) -> dict[str, Any]:
    """The ``messages`` row of a message (without the surrogate key)."""
    row = dict(zip(MESSAGE_COLUMNS, message_values(message), strict=True))
    row["thread_id"] = thread_id
    return row


def file_rows(thread_id: str, messages: Iterable[Message]) -> list[dict[str, Any]]:
    """``message_files`` rows: one per attachment, in order."""
    return [
        {
            "thread_id": thread_id,
            "message_id": message.id,
            "position": position,
            "filename": a.filename,
            "mime_type": a.mime_type,
            "file_id": a.file_id,
            "storage_path": a.storage_path,
            "storage_backend": a.storage_backend,
            "status": a.status,
            "size": a.size,
            "attributes": a.attributes,
        }
        for message in messages
        for position, a in enumerate(message.attachments)
    ]


def reaction_rows(thread_id: str, messages: Iterable[Message]) -> list[dict[str, Any]]:
    """``message_reactions`` rows: one per (emoji, user), numbered so that both the order of the
    emojis and the order in which users reacted survive."""
    rows = []
    for message in messages:
        position = 0
        for emoji, users in message.reactions.items():
            for user in users:
                rows.append(
                    {
                        "thread_id": thread_id,
                        "message_id": message.id,
                        "position": position,
                        "emoji": emoji,
                        "user_id": user,
                    }
                )
                position += 1
    return rows
