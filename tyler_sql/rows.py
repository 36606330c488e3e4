"""Models to rows and back, and the digests of the attribute and source lookups."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tyler_core.jsonvalues import canonical_json
from tyler_core.models import TRUSTED, Message, Thread
from tyler_sql.search import search_words

__all__ = [
    "file_rows",
    "key_digest",
    "key_rows",
    "message_row",
    "reaction_rows",
    "thread_row",
    "to_messages",
    "to_thread",
]

ATTRIBUTE = "attribute"
SOURCE = "source"


def key_digest(kind: str, key: str, value: Any) -> str:
    """The lookup digest of one top-level key: SHA-256 of ``[kind, key, canonical value]``.

    The JSON array makes the encoding unambiguous, and canonical JSON makes equal values (rule 7:
    type-strict, numbers by value, objects regardless of key order) share one digest.
    """
    encoded = json.dumps([kind, key, canonical_json(value)], ensure_ascii=False)
    return hashlib.sha256(encoded.encode("utf-8", "surrogatepass")).hexdigest()


def key_rows(
    thread_id: str, attributes: Mapping[str, Any], source: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """One ``thread_keys`` row per top-level key of ``attributes`` and ``source``."""
    rows = []
    for kind, document in ((ATTRIBUTE, attributes), (SOURCE, source or {})):
        for key, value in document.items():
            rows.append(
                {
                    "thread_id": thread_id,
                    "digest": key_digest(kind, key, value),
                    "kind": kind,
                    "key": key,
                    "value": canonical_json(value),
                }
            )
    return rows


def thread_row(thread: Thread, *, version: int, updated_at: Any) -> dict[str, Any]:
    """The ``threads`` row (all columns)."""
    return {
        "id": thread.id,
        "title": thread.title,
        "created_at": thread.created_at,
        "updated_at": updated_at,
        "attributes": thread.attributes,
        "source": thread.source,
        "version": version,
    }


def message_row(thread_id: str, message: Message) -> dict[str, Any]:
    """The ``messages`` row of a message (without the surrogate key)."""
    return {
        "thread_id": thread_id,
        "id": message.id,
        "sequence": message.sequence,
        "role": message.role,
        "content": message.content,
        "name": message.name,
        "tool_call_id": message.tool_call_id,
        "tool_calls": message.tool_calls,
        "attributes": message.attributes,
        "timestamp": message.timestamp,
        "source": message.source,
        "metrics": message.metrics,
        "search_words": search_words(message),
    }


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


_FILE_FIELDS = (
    "filename",
    "mime_type",
    "file_id",
    "storage_path",
    "storage_backend",
    "status",
    "size",
    "attributes",
)
_MESSAGE_FIELDS = (
    "id",
    "role",
    "sequence",
    "content",
    "name",
    "tool_call_id",
    "tool_calls",
    "attributes",
    "timestamp",
    "source",
    "metrics",
)


def to_messages(
    message_rows: Sequence[Mapping[str, Any]],
    file_rows: Sequence[Mapping[str, Any]],
    reaction_rows: Sequence[Mapping[str, Any]],
) -> dict[str, list[Message]]:
    """Messages per thread id, in the order of ``message_rows`` (which come in sequence order);
    file and reaction rows must come in ``position`` order."""
    files: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in file_rows:
        files.setdefault((row["thread_id"], row["message_id"]), []).append(
            {name: row[name] for name in _FILE_FIELDS}
        )
    reactions: dict[tuple[str, str], dict[str, list[str]]] = {}
    for row in reaction_rows:
        emojis = reactions.setdefault((row["thread_id"], row["message_id"]), {})
        emojis.setdefault(row["emoji"], []).append(row["user_id"])
    result: dict[str, list[Message]] = {}
    for row in message_rows:
        key = (row["thread_id"], row["id"])
        data = {name: row[name] for name in _MESSAGE_FIELDS}
        data["attachments"] = files.get(key, [])
        data["reactions"] = reactions.get(key, {})
        result.setdefault(row["thread_id"], []).append(
            Message.model_validate(data, context=TRUSTED)
        )
    return result


def to_thread(row: Mapping[str, Any], messages: list[Message]) -> Thread:
    """A thread from its row and its messages."""
    thread = Thread.model_validate(
        {
            "id": row["id"],
            "title": row["title"],
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
            "attributes": row["attributes"],
            "source": row["source"],
            "version": row["version"],
        },
        context=TRUSTED,
    )
    thread.messages = messages
    return thread
