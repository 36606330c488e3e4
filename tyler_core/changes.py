"""What changed since a thread was loaded: the change set the facade hands a backend.

The store keeps a :class:`Snapshot` of every thread object it returned or saved: a strict clone of
the thread's own fields and of each stored message. On the next save it compares the thread with
the snapshot and hands the backend only what differs, so an in-place edit of a nested value
(``msg.attributes["k"]["x"] = 1``) is seen like any other change, and appending one message to a
long thread writes one message.

The clones (:mod:`tyler_core.clones`) compare with the live objects type-strictly, in one
C-level comparison per message that mostly checks identities.

A save whose message list starts with exactly the messages of the snapshot (messages appended, or
none) compares those in one pass and does per-message work only for the new ones; any other save
compares message by message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter, itemgetter
from typing import Any

from tyler_core.clones import SYSTEM_ENTRY, clone_entries, clone_fields, clone_message
from tyler_core.jsonvalues import INT64_MAX
from tyler_core.models import Message, Thread, assign_sequences, check_unique, new_incarnation

__all__ = ["Snapshot", "ThreadChanges", "compute_changes", "snapshot_of"]

_THREAD_FIELDS = ("title", "created_at", "attributes", "source")
_FIELDS = attrgetter("__dict__")
_SEQUENCE = attrgetter("sequence")
_SEQUENCE_FIELD = itemgetter("sequence")
# A message whose sequence is equal to its clone's and of one of these types has the same one
# (a system message's may be None; True or 1.0 would compare equal to 1).
_SEQUENCE_TYPES = frozenset({int, type(None)})


def _thread_fields(thread: Thread) -> dict[str, Any]:
    return {name: getattr(thread, name) for name in _THREAD_FIELDS}


# -- snapshots --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Layout:
    """What a save needs to know about a snapshot's stored messages, derived from its entries."""

    index: dict[str, dict[str, Any]]  # stored message id -> its clone
    last: int  # the highest stored sequence (-1: none)
    ordered: bool  # the stored messages are in increasing sequence order in the list
    first: int | None  # where the stored messages start when every system message comes first


# Above every valid sequence: a new message never comes after it, so it takes the slow path.
_NO_SEQUENCE = INT64_MAX + 1


def _layout_of(entries: Sequence[Any]) -> _Layout:
    index: dict[str, dict[str, Any]] = {}
    last, ordered = -1, True
    first: int | None = 0
    for position, entry in enumerate(entries):
        if entry is SYSTEM_ENTRY:
            first = position + 1 if first is not None and not index else None
            continue
        index[entry["id"]] = entry
        sequence = entry["sequence"]
        if type(sequence) is not int:  # not from a validated message: no appending fast path
            sequence = _NO_SEQUENCE
        if sequence <= last:
            ordered = False
        last = max(last, int(sequence))
    return _Layout(index, last, ordered, first)


@dataclass(slots=True, eq=False)
class Snapshot:
    """The stored state of one thread as one store last saw it: strict clones of the thread's
    fields and of its messages, one entry per item of ``thread.messages`` (system messages get a
    marker, since they are never stored)."""

    thread_id: str
    version: int
    thread: dict[str, Any]
    entries: list[Any]
    _layout: _Layout | None = None

    @property
    def layout(self) -> _Layout:
        """Derived from the entries when a save first needs it, so reads do not pay for it."""
        if self._layout is None:
            self._layout = _layout_of(self.entries)
        return self._layout


def snapshot_of(thread: Thread) -> Snapshot:
    """The snapshot of ``thread`` as it was just read from a backend."""
    return Snapshot(
        thread.id,
        thread.version,
        clone_fields(_thread_fields(thread)),
        clone_entries(thread.messages),
    )


# -- change sets ------------------------------------------------------------------------------


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
    # For the facade, once the write succeeded: the snapshot to keep, and the caller's messages
    # that were handed on as validated copies, with their copies.
    snapshot: Snapshot | None = field(default=None, repr=False, compare=False)
    copies: Sequence[tuple[Message, Message]] = field(default=(), repr=False, compare=False)


def _validated(message: Message, sequence: int | None = None) -> Message:
    """A checked, normalised copy of a message (datetimes in UTC, limits enforced), with
    ``sequence`` if one is given."""
    data = message.model_dump(round_trip=True)
    if sequence is not None:
        data["sequence"] = sequence
    return Message.model_validate(data)


@dataclass(slots=True)
class _Messages:
    """The message part of a change set, and the entries and layout of the next snapshot."""

    messages: list[Message]
    entries: list[Any]
    layout: _Layout | None
    added: list[Message] = field(default_factory=list)
    changed: list[Message] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    copies: list[tuple[Message, Message]] = field(default_factory=list)


def _appended(thread: Thread, snapshot: Snapshot) -> _Messages | None:
    """The changes when the message list starts with the snapshot's messages, unchanged (one
    C-level comparison); ``None`` when it does not, or when the new messages need the checks of
    :func:`_compared` (a taken id or sequence, or a sequence out of order)."""
    current = thread.messages
    entries = snapshot.entries
    known = len(entries)
    if len(current) < known:
        return None
    prefix = current[:known]
    fields = list(map(_FIELDS, prefix))
    if entries != fields:
        return None
    if not _SEQUENCE_TYPES.issuperset(map(type, map(_SEQUENCE_FIELD, fields))):
        return None
    layout = snapshot.layout
    if layout.last == _NO_SEQUENCE:
        return None
    tail = current[known:]
    new = [m for m in tail if m.role != "system"]
    given = [m.sequence for m in new if m.sequence is not None]
    if any(type(sequence) is not int for sequence in given):
        return None  # let validation in _compared say what is wrong
    highest = max(0, layout.last, *given)  # what assign_sequences would start from
    index = layout.index
    added: list[Message] = []
    copies: list[tuple[Message, Message]] = []
    clones: dict[str, dict[str, Any]] = {}
    previous = layout.last
    for message in new:
        if message.id in index or message.id in clones:
            return None
        if message.sequence is None:
            highest += 1
            checked = _validated(message, highest)  # validated with it: it may be too high
        else:
            checked = _validated(message)
        if checked.sequence is None or checked.sequence <= previous:
            return None
        previous = checked.sequence
        added.append(checked)
        copies.append((message, checked))
        clones[message.id] = clone_message(checked)

    first = layout.first
    if first is None:
        messages = [m for m in prefix if m.role != "system"]
        messages += added
    else:
        messages = [*prefix[first:], *added]
    if not layout.ordered:
        messages.sort(key=_SEQUENCE)
    tail_entries = [SYSTEM_ENTRY if m.role == "system" else clones[m.id] for m in tail]
    next_layout = None
    if len(new) == len(tail):  # no system message after the stored ones: the layout carries on
        next_index = index.copy()
        next_index.update(clones)
        next_layout = _Layout(next_index, previous, layout.ordered, first)
    return _Messages(messages, entries + tail_entries, next_layout, added=added, copies=copies)


def _compared(thread: Thread, snapshot: Snapshot | None) -> _Messages:
    """The changes found message by message (all messages are new without a snapshot)."""
    current = thread.messages
    stored = [m for m in current if m.role != "system"]
    pending = stored
    if any(m.sequence is None for m in stored):
        pending = [m.model_copy() if m.sequence is None else m for m in stored]
        assign_sequences(pending)
    check_unique(pending)

    index = snapshot.layout.index if snapshot is not None else {}
    result = _Messages([], [], None)
    clones: dict[str, dict[str, Any]] = {}
    for original, message in zip(stored, pending, strict=True):
        clone = index.get(message.id)
        if (
            clone is not None
            and message is original
            and clone == message.__dict__
            and type(message.sequence) is int
        ):
            result.messages.append(message)
            clones[message.id] = clone
            continue
        checked = _validated(message)
        result.messages.append(checked)
        result.copies.append((original, checked))
        if clone is None:
            result.added.append(checked)
        elif clone != checked.__dict__:  # the clone on the left: its numbers compare strictly
            result.changed.append(checked)
        else:  # equal once validated (1.0 given for an int field, say): nothing to write
            clones[message.id] = clone
            continue
        clones[message.id] = clone_message(checked)
    result.messages.sort(key=_SEQUENCE)
    result.entries = [SYSTEM_ENTRY if m.role == "system" else clones[m.id] for m in current]
    if snapshot is not None:
        result.removed = [mid for mid in index if mid not in clones]
    return result


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
    need normalising, are handed on as validated copies (listed in ``copies``).

    Raises:
        pydantic.ValidationError: a changed part breaks a model limit.
        ValueError: two messages share an id or a sequence.
    """
    # The thread's own fields, checked and normalised (in-place edits of attributes included).
    header = Thread.model_validate(
        {name: getattr(thread, name) for name in ("id", *_THREAD_FIELDS)}
    )
    fields = _thread_fields(header)
    usable = (
        snapshot is not None
        and expected_version is not None
        and snapshot.thread_id == thread.id
        and snapshot.version == expected_version
    )
    if not usable or snapshot is None:
        found = _compared(thread, None)
        thread_changed = True
        thread_clone = clone_fields(fields)
    else:
        found = _appended(thread, snapshot) or _compared(thread, snapshot)
        thread_changed = snapshot.thread != fields  # the clone on the left
        thread_clone = clone_fields(fields) if thread_changed else snapshot.thread
    return ThreadChanges(
        thread=header,
        version=version,
        updated_at=updated_at,
        expected_version=expected_version,
        full=not usable,
        incarnation=new_incarnation(),
        expected_incarnation=thread.incarnation if expected_version else None,
        messages=found.messages,
        added=found.messages if not usable else found.added,
        changed=found.changed,
        removed=found.removed,
        thread_changed=thread_changed,
        ttl=ttl,
        snapshot=Snapshot(thread.id, version, thread_clone, found.entries, found.layout),
        copies=found.copies,
    )
