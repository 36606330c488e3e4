"""What changed since a thread was loaded: the change set the facade hands a backend.

The store keeps a :class:`Snapshot` of every thread object it returned or saved: the JSON
fingerprint of the thread's own fields and of each stored message. On the next save it
fingerprints the thread again and hands the backend only what differs, so an in-place edit of a
nested value (``msg.attributes["k"]["x"] = 1``) is seen like any other change, and appending one
message to a long thread writes one message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import pydantic_core

from tyler_core.models import Message, Thread, assign_sequences, check_unique, new_incarnation

__all__ = ["Snapshot", "ThreadChanges", "compute_changes", "snapshot_of"]

_THREAD_FIELDS = ("title", "created_at", "attributes", "source")


def _thread_fingerprint(thread: Thread) -> bytes:
    return pydantic_core.to_json([getattr(thread, name) for name in _THREAD_FIELDS])


def _message_fingerprint(message: Message) -> bytes:
    return pydantic_core.to_json(message)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The stored state of one thread as one store last saw it."""

    thread_id: str
    version: int
    thread: bytes
    messages: dict[str, bytes]


def snapshot_of(thread: Thread, messages: Sequence[Message]) -> Snapshot:
    """The snapshot of ``thread`` as stored with ``messages`` (its non-system messages)."""
    return Snapshot(
        thread.id,
        thread.version,
        _thread_fingerprint(thread),
        {m.id: _message_fingerprint(m) for m in messages},
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ThreadChanges:
    """One save, as the backend writes it (see :meth:`StorageBackend.write`).

    Attributes:
        thread: the thread's own fields, validated (a copy without messages). Read its ``id``,
            ``title``, ``created_at``, ``attributes`` and ``source``; take ``version`` and
            ``updated_at`` from this object instead, and the messages from ``messages``.
            Never keep a reference to it or to anything in ``messages``.
        version: the version to store.
        updated_at: the ``updated_at`` to store (UTC).
        expected_version: the stored version the write requires (0: the thread must not
            exist), or ``None`` to write without a check (``preserve=True``).
        expected_incarnation: with ``expected_version`` > 0, the incarnation token the stored
            thread must also have (``None``: the caller's object carries none; check the
            version only). A stored thread that has another token, or none, is another thread
            stored under the same id after a delete: refuse the write like a version mismatch.
        incarnation: the token to store when this write creates the thread
            (``expected_version == 0``, or no stored thread) or replaces it without a check
            (``expected_version is None``). Any other write keeps the stored token.
        full: no snapshot: replace the stored thread whole with ``messages``.
        messages: every message to be stored (no system messages), in sequence order.
        added: messages that are not stored yet (all of ``messages`` when ``full``).
        changed: stored messages whose content changed (same id).
        removed: ids of stored messages to delete.
        thread_changed: the thread's own fields (title, created_at, attributes, source)
            changed; ``version`` and ``updated_at`` are always written.
        ttl: seconds until the thread expires, or ``None`` (``ttl`` capability only).
    """

    thread: Thread
    version: int
    updated_at: datetime
    expected_version: int | None
    full: bool
    incarnation: str = ""
    expected_incarnation: str | None = None
    messages: Sequence[Message]
    added: Sequence[Message] = ()
    changed: Sequence[Message] = ()
    removed: Sequence[str] = ()
    thread_changed: bool = True
    ttl: float | None = None
    # Fingerprints of what will be stored, so the facade's next snapshot costs nothing more.
    fingerprints: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)
    thread_fingerprint: bytes = field(default=b"", repr=False, compare=False)


def _validated(message: Message) -> Message:
    """A checked, normalised copy of a message (datetimes in UTC, limits enforced)."""
    return Message.model_validate(message.model_dump(round_trip=True))


def compute_changes(
    thread: Thread,
    snapshot: Snapshot | None,
    *,
    version: int,
    updated_at: datetime,
    expected_version: int | None,
    ttl: float | None,
) -> ThreadChanges:
    """Work out what ``thread`` changed against ``snapshot`` and validate the changed parts.

    The caller's objects are not modified: messages that need a sequence, or whose datetimes
    need normalising, are handed on as validated copies.

    Raises:
        pydantic.ValidationError: a changed part breaks a model limit.
        ValueError: two messages share an id or a sequence.
    """
    stored = [m for m in thread.messages if m.role != "system"]
    if any(m.sequence is None for m in stored):
        copies = [m.model_copy() if m.sequence is None else m for m in stored]
        assign_sequences(copies)
        stored = copies
    check_unique(stored)

    # The thread's own fields, checked and normalised (in-place edits of attributes included).
    header = Thread.model_validate(
        {name: getattr(thread, name) for name in ("id", *_THREAD_FIELDS)}
    )

    usable = (
        snapshot is not None
        and expected_version is not None
        and snapshot.thread_id == thread.id
        and snapshot.version == expected_version
    )
    old = snapshot.messages if usable and snapshot is not None else {}
    thread_fingerprint = _thread_fingerprint(header)

    messages: list[Message] = []
    added: list[Message] = []
    changed: list[Message] = []
    fingerprints: dict[str, bytes] = {}
    for message in stored:
        fingerprint = _message_fingerprint(message)
        previous = old.get(message.id)
        if previous is not None and previous == fingerprint:
            messages.append(message)
            fingerprints[message.id] = fingerprint
            continue
        copy = _validated(message)
        fingerprint = _message_fingerprint(copy)
        messages.append(copy)
        fingerprints[message.id] = fingerprint
        if previous is None:
            added.append(copy)
        elif previous != fingerprint:
            changed.append(copy)
    messages.sort(key=lambda m: m.sequence or 0)

    if not usable:
        return ThreadChanges(
            thread=header,
            version=version,
            updated_at=updated_at,
            expected_version=expected_version,
            full=True,
            incarnation=new_incarnation(),
            expected_incarnation=thread.incarnation if expected_version else None,
            messages=messages,
            added=messages,
            ttl=ttl,
            fingerprints=fingerprints,
            thread_fingerprint=thread_fingerprint,
        )
    assert snapshot is not None
    current = {m.id for m in stored}
    return ThreadChanges(
        thread=header,
        version=version,
        updated_at=updated_at,
        expected_version=expected_version,
        full=False,
        incarnation=new_incarnation(),
        expected_incarnation=thread.incarnation if expected_version else None,
        messages=messages,
        added=added,
        changed=changed,
        removed=[mid for mid in snapshot.messages if mid not in current],
        thread_changed=thread_fingerprint != snapshot.thread,
        ttl=ttl,
        fingerprints=fingerprints,
        thread_fingerprint=thread_fingerprint,
    )
