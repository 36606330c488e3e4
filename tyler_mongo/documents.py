"""How threads and messages are laid out as MongoDB documents, and read back.

Two collections per namespace: ``{ns}_threads`` and ``{ns}_messages``.

A **thread document** is the commit point of its thread::

    {_id: thread id, version, epoch, incarnation, updated_us, updated_at,
     header: JSON text of {title, created_at, attributes, source},
     attrs: [{k, v}], src: [{k, v}],      # top-level keys, canonical JSON values (lookups)
     refs: {H(message id): {o: message document _id, s: sequence}},
     expires_at, ttl, msg_expires_at}     # only for threads with a TTL

A **message document** holds one version of one message::

    {_id: ObjectId, t: thread id, m: message id, s: sequence, e: writer's epoch,
     data: JSON text of the Message, text: its searchable text, expires_at}

The user's JSON (attributes, sources, message fields) is stored as JSON *text*: BSON field
names cannot hold every key (``.``, ``$``, NUL) and BSON cannot keep key order or an integer's
width as given, while JSON text round-trips exactly. The lookups use the ``attrs``/``src``
arrays, where a user's key is a value (queried with ``$elemMatch``), never a field name.

``incarnation`` is the thread's token (:attr:`tyler_core.models.Thread.incarnation`); documents
written before tokens existed have none.

``refs`` says which message documents are the thread's messages: a message document not
referenced by a committed thread document is invisible (an unfinished or failed save, or a
replaced version awaiting deletion). Its keys are hashes of message ids, so they are plain hex.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic_core
from bson import ObjectId

from tyler_core.jsonvalues import canonical_json
from tyler_core.models import TRUSTED, Message, Thread, set_incarnation

__all__ = [
    "from_micros",
    "incarnation_of",
    "lookup_array",
    "message_document",
    "message_key",
    "micros",
    "read_message",
    "read_thread",
    "text_of",
    "thread_fields",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(value: datetime) -> int:
    """Microseconds since 1970 (UTC): exact, unlike BSON dates, which keep milliseconds."""
    delta = value.astimezone(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    """The UTC datetime of :func:`micros`."""
    return _EPOCH + timedelta(microseconds=value)


def message_key(message_id: str) -> str:
    """The field name of a message in ``refs``: a hash, so user text never becomes a path."""
    return hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def lookup_array(values: Mapping[str, Any] | None) -> list[dict[str, str]]:
    """``[{k: key, v: canonical JSON of the value}]`` for each top-level key (rule 7)."""
    if not values:
        return []
    return [{"k": key, "v": canonical_json(value)} for key, value in values.items()]


def text_of(message: Message) -> str:
    """The searchable text of a message: its text content and text parts."""
    content = message.content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if p.get("type") == "text")
    return content or ""


def thread_fields(thread: Thread) -> dict[str, Any]:
    """The fields of a thread document that come from the thread's own fields."""
    header = pydantic_core.to_json(
        {
            "title": thread.title,
            "created_at": thread.created_at,
            "attributes": thread.attributes,
            "source": thread.source,
        }
    ).decode()
    return {
        "header": header,
        "attrs": lookup_array(thread.attributes),
        "src": lookup_array(thread.source),
    }


def message_document(
    message: Message, *, thread_id: str, epoch: int, expires_at: datetime | None
) -> dict[str, Any]:
    """A new message document for ``message``, written by the writer of ``epoch``."""
    document: dict[str, Any] = {
        "_id": ObjectId(),
        "t": thread_id,
        "m": message.id,
        "s": message.sequence,
        "e": epoch,
        "data": message.model_dump_json(),
        "text": text_of(message),
    }
    if expires_at is not None:
        document["expires_at"] = expires_at
    return document


def incarnation_of(document: Mapping[str, Any] | None) -> str | None:
    """The incarnation token of a thread document (``None``: no document, or one without)."""
    if document is None:
        return None
    token = document.get("incarnation")
    return None if token is None else str(token)


def read_message(document: Mapping[str, Any]) -> Message:
    """The message a message document holds."""
    return Message.model_validate_json(document["data"], context=TRUSTED)


def read_thread(document: Mapping[str, Any], messages: list[Message]) -> Thread:
    """The thread a thread document holds, with ``messages`` (already in sequence order)."""
    header = json.loads(document["header"])
    thread = Thread.model_validate(
        {
            **header,
            "id": document["_id"],
            "version": document["version"],
            "updated_at": from_micros(document["updated_us"]),
        },
        context=TRUSTED,
    )
    # Assigned after validation: the messages were validated when they were read.
    thread.messages = messages
    return set_incarnation(thread, incarnation_of(document))
