"""Models to rows, and the digests of the attribute and source lookups (rows back to models:
:mod:`tyler_sql.pages`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from tyler_core.jsonvalues import canonical_json
from tyler_core.models import Message, Thread
from tyler_sql.search import search_words

__all__ = [
    "file_rows",
    "key_digest",
    "key_rows",
    "message_row",
    "reaction_rows",
    "source_digest",
    "source_digests",
    "thread_row",
]

ATTRIBUTE = "attribute"
SOURCE = "source"


# Built once: json.dumps with options builds an encoder on every call.
_encode = json.JSONEncoder(ensure_ascii=False).encode


def key_digest(kind: str, key: str, value: Any) -> str:
    """The lookup digest of one top-level key: SHA-256 of ``[kind, key, canonical value]``.

    The JSON array makes the encoding unambiguous, and canonical JSON makes equal values (rule 7:
    type-strict, numbers by value, objects regardless of key order) share one digest.
    """
    encoded = _encode([kind, key, canonical_json(value)])
    return hashlib.sha256(encoded.encode("utf-8", "surrogatepass")).hexdigest()


def source_digest(name: str | None, key: str, value: Any) -> str:
    """The lookup digest of a source property other than ``name``: SHA-256 of ``["source",
    canonical name, key, canonical value]`` (``name``: the canonical JSON of the source's
    ``name``, ``None`` for a source without one).

    Covering the name makes this one digest as selective as the source name and the property
    together: a lookup by both reads only the threads that have both.
    """
    encoded = _encode([SOURCE, name, key, canonical_json(value)])
    return hashlib.sha256(encoded.encode("utf-8", "surrogatepass")).hexdigest()


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


def key_rows(
    thread_id: str, attributes: Mapping[str, Any], source: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """One ``thread_keys`` row per top-level key of ``attributes`` and ``source``."""
    rows = []
    for key, value in attributes.items():
        rows.append(_key_row(thread_id, ATTRIBUTE, key, value, key_digest(ATTRIBUTE, key, value)))
    if source:
        name = canonical_json(source["name"]) if "name" in source else None
        for key, value in source.items():
            digest = (
                key_digest(SOURCE, key, value) if key == "name" else source_digest(name, key, value)
            )
            rows.append(_key_row(thread_id, SOURCE, key, value, digest))
    return rows


def _key_row(thread_id: str, kind: str, key: str, value: Any, digest: str) -> dict[str, Any]:
    return {
        "thread_id": thread_id,
        "digest": digest,
        "kind": kind,
        "key": key,
        "value": canonical_json(value),
    }


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
        "attachment_count": len(message.attachments),
        "reaction_count": sum(len(users) for users in message.reactions.values()),
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
