"""What a save or an append writes, worked out from the thread document as read (no I/O).

Every write follows the same steps, with or without a multi-document transaction:

1. read the thread document (its ``epoch``, ``version``, ``incarnation`` and ``refs``); a save
   that creates the thread or writes it unchecked skips this and plans for no document, so that
   its commit is an insert, which fails if there is one after all (then it reads and retries);
2. if the thread has a TTL, make sure the messages it keeps expire no earlier than it will;
3. insert the new message documents, stamped with the writer's ``epoch``;
4. **commit**: update the thread document only if its ``epoch`` and ``incarnation`` are still
   the ones read (or insert it if there was none). This single-document write is atomic: before
   it readers see the old ``refs`` and so the old messages, after it the new ones;
5. delete the message documents the commit replaced, and any leftovers of writers that failed
   (after a save that replaced every message: every message document of a lower epoch).

A writer's ``epoch`` is ``max(read epoch + 1, now in microseconds)``: it grows with every commit,
even across a delete and re-creation of the thread, so a message document whose epoch is below
the committed one and which the thread does not reference belongs to a writer that can no
longer commit: it is a leftover, safe to delete.

The ``incarnation`` token tells a thread from another one stored later under the same id after a
delete (the ``epoch`` alone would, but only as long as the clock never goes back). A save that
creates the thread, or writes without a check (``preserve``), stores the change set's token;
every other write keeps the stored one. Thread documents written before tokens existed have
none: they read as ``None`` and are checked by version only. Message documents need no token:
``refs`` names them by their unique ``_id``, so a message document of one incarnation can never
be taken for one of another.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId

from tyler_core.changes import ThreadChanges
from tyler_core.errors import ConcurrencyError, ThreadNotFoundError
from tyler_core.models import Message
from tyler_mongo.documents import (
    incarnation_of,
    message_document,
    message_key,
    micros,
    thread_fields,
)

__all__ = ["WritePlan", "is_live", "plan_append", "plan_write"]

Refs = dict[str, dict[str, Any]]


@dataclass(slots=True, kw_only=True)
class WritePlan:
    """The writes of one attempt at a save or an append, in order.

    Attributes:
        thread_id: the thread.
        epoch: this writer's epoch (stamped on its message documents and, at commit, the thread).
        read_epoch: the epoch the commit requires, or ``None``: the thread document must not
            exist (it is inserted).
        read_incarnation: the incarnation token the commit requires along with ``read_epoch``
            (``None``: the document has none).
        expiry_update: an update for the thread's older message documents that have an
            expiry, run before the inserts: it only ever makes them live longer (a later
            expiry, or none), so it is safe even when the commit then fails. ``None``: none.
        mortal_after: after the commit, the expiry to give the thread's older message
            documents that have none (the thread had no TTL before this write), or ``None``.
            Making a document mortal before the commit could let it expire under a thread
            that another writer committed without a TTL, so only a writer that committed
            does it, then re-reads the thread (see ``_Writes._make_mortal``).
        immortal_after: after the commit, remove the expiry of the thread's older message
            documents again (this write removes the TTL): a writer that committed before
            this one may have given them one after this write's own ``expiry_update``.
        inserts: the new message documents.
        thread_set, thread_unset: the commit's ``$set`` and ``$unset`` (the whole document when
            it is inserted).
        thread_inc: the commit's ``$inc``.
        replaced: message documents the commit stops referencing (deleted after it).
        whole: the commit replaces every message: every message document of a lower epoch
            can go after it (the replaced ones and any leftovers).
        after_expiry: the thread document read was expired or gone: message documents of a
            lower epoch may be an expired thread's, which the TTL index has not deleted yet.
        refs: the thread's ``refs`` after the commit.
    """

    thread_id: str
    epoch: int
    read_epoch: int | None
    read_incarnation: str | None = None
    expiry_update: dict[str, Any] | None = None
    mortal_after: datetime | None = None
    immortal_after: bool = False
    inserts: list[dict[str, Any]] = field(default_factory=list)
    thread_set: dict[str, Any] = field(default_factory=dict)
    thread_unset: dict[str, str] = field(default_factory=dict)
    thread_inc: dict[str, int] = field(default_factory=dict)
    replaced: list[ObjectId] = field(default_factory=list)
    whole: bool = False
    after_expiry: bool = False
    refs: Refs = field(default_factory=dict)

    @property
    def inserted_ids(self) -> list[ObjectId]:
        """The ``_id`` of every message document this attempt inserts."""
        return [document["_id"] for document in self.inserts]

    def thread_document(self) -> dict[str, Any]:
        """The thread document to insert when none exists."""
        return {"_id": self.thread_id, **self.thread_set, **self.thread_inc}


def is_live(document: Mapping[str, Any] | None, now: datetime) -> bool:
    """Whether a thread document exists and has not expired."""
    if document is None:
        return False
    expires_at = document.get("expires_at")
    return expires_at is None or expires_at > now


def _epoch(document: Mapping[str, Any] | None, now: datetime) -> int:
    previous = 0 if document is None else int(document.get("epoch", 0))
    return max(previous + 1, micros(now))


def _expiry(
    plan: WritePlan,
    *,
    ttl: float | None,
    now: datetime,
    kept: Mapping[str, Any] | None,
) -> datetime | None:
    """Set the TTL fields of ``plan`` and return the expiry for its new message documents.

    Messages must never expire before their thread (a thread never loses only some of its
    messages), so message documents get the thread's expiry plus one TTL of slack, and the
    thread remembers the earliest expiry of its messages in ``msg_expires_at``; the kept
    messages are pushed later only when that is no longer enough (once per TTL, not per save).
    ``kept`` is the thread document whose messages the write keeps, if any.

    Without a transaction, what a write does to message documents before its commit stays
    when the commit fails, so before it a write only makes them live longer; giving an
    expiry to documents that had none waits for the commit (``mortal_after``).
    """
    if ttl is None:
        plan.thread_set.update(ttl=None, expires_at=None, msg_expires_at=None)
        if kept is not None and kept.get("msg_expires_at") is not None:
            plan.expiry_update = {"$unset": {"expires_at": ""}}
            plan.immortal_after = True
        return None
    expires_at = now + timedelta(seconds=ttl)
    message_expiry = expires_at + timedelta(seconds=ttl)
    earliest = message_expiry
    if kept is not None:
        previous = kept.get("msg_expires_at")
        if previous is None:
            plan.mortal_after = message_expiry
        elif previous < expires_at:
            plan.expiry_update = {"$max": {"expires_at": message_expiry}}
        else:
            earliest = min(previous, message_expiry)
    plan.thread_set.update(ttl=ttl, expires_at=expires_at, msg_expires_at=earliest)
    return message_expiry


def _reference(plan: WritePlan, message: Message, expires_at: datetime | None) -> str:
    document = message_document(
        message, thread_id=plan.thread_id, epoch=plan.epoch, expires_at=expires_at
    )
    plan.inserts.append(document)
    key = message_key(message.id)
    plan.refs[key] = {"o": document["_id"], "s": message.sequence}
    return key


def plan_write(
    changes: ThreadChanges, document: Mapping[str, Any] | None, now: datetime
) -> WritePlan:
    """Plan a save of ``changes`` over the thread document as read (``None``: none stored).

    Raises:
        ConcurrencyError: the stored version is not ``changes.expected_version``, or the
            stored thread is another incarnation than ``changes.expected_incarnation``.
    """
    thread = changes.thread
    live = is_live(document, now)
    stored_version = int(document["version"]) if live and document is not None else 0
    expected = changes.expected_version
    if expected is not None and stored_version != expected:
        raise ConcurrencyError(
            f"thread {thread.id!r} is at version {stored_version}, not {expected}"
        )
    if (
        expected
        and changes.expected_incarnation is not None
        and incarnation_of(document) != changes.expected_incarnation
    ):
        raise ConcurrencyError(
            f"thread {thread.id!r} was deleted and stored again since it was loaded"
        )
    plan = WritePlan(
        thread_id=thread.id,
        epoch=_epoch(document, now),
        read_epoch=None if document is None else int(document.get("epoch", 0)),
        read_incarnation=incarnation_of(document),
    )
    if not (live and expected):
        # Created (no live thread, or version 0 expected) or written unchecked: a new
        # incarnation. Any other save keeps the stored token.
        plan.thread_set["incarnation"] = changes.incarnation
    keep = live and not changes.full
    old_refs: Refs = dict(document.get("refs") or {}) if document is not None else {}
    message_expiry = _expiry(plan, ttl=changes.ttl, now=now, kept=document if keep else None)
    plan.thread_set.update(
        version=changes.version,
        epoch=plan.epoch,
        updated_us=micros(changes.updated_at),
        updated_at=changes.updated_at,
    )
    if not keep:
        # A new thread, an expired one being replaced, or a save without a snapshot: the
        # messages become exactly ``changes.messages``.
        plan.thread_set.update(thread_fields(thread))
        for message in changes.messages:
            _reference(plan, message, message_expiry)
        plan.thread_set["refs"] = dict(plan.refs)
        plan.replaced = [ref["o"] for ref in old_refs.values()]
        plan.whole = True
        plan.after_expiry = not live
        return plan

    if changes.thread_changed:
        plan.thread_set.update(thread_fields(thread))
    refs = dict(old_refs)
    for message in (*changes.added, *changes.changed):
        key = _reference(plan, message, message_expiry)
        plan.thread_set[f"refs.{key}"] = plan.refs[key]
        if key in old_refs:
            plan.replaced.append(old_refs[key]["o"])
    for message_id in changes.removed:
        key = message_key(message_id)
        if key in old_refs:
            plan.thread_unset[f"refs.{key}"] = ""
            plan.replaced.append(old_refs[key]["o"])
            refs.pop(key)
    plan.refs = {**refs, **plan.refs}
    return plan


def plan_append(
    thread_id: str,
    messages: Sequence[Message],
    document: Mapping[str, Any] | None,
    *,
    updated_at: datetime,
    now: datetime,
) -> tuple[WritePlan, list[Message]]:
    """Plan an append to the thread document as read; return the plan and the messages with
    their sequences (copies).

    Raises:
        ThreadNotFoundError: no live thread.
        ValueError: one of the message ids is already in the thread.
    """
    if document is None or not is_live(document, now):
        raise ThreadNotFoundError(f"no thread {thread_id!r}")
    old_refs: Refs = dict(document.get("refs") or {})
    for message in messages:
        if message_key(message.id) in old_refs:
            raise ValueError(f"thread {thread_id!r} already has a message {message.id!r}")
    highest = max((int(ref["s"]) for ref in old_refs.values()), default=0)
    added = []
    for offset, message in enumerate(messages, start=1):
        copy = message.model_copy(deep=True)
        copy.sequence = highest + offset
        added.append(copy)
    plan = WritePlan(
        thread_id=thread_id,
        epoch=_epoch(document, now),
        read_epoch=int(document["epoch"]),
        read_incarnation=incarnation_of(document),
    )
    ttl = document.get("ttl")
    message_expiry = _expiry(plan, ttl=ttl, now=now, kept=document)
    for message in added:
        key = _reference(plan, message, message_expiry)
        plan.thread_set[f"refs.{key}"] = plan.refs[key]
    plan.thread_set.update(epoch=plan.epoch, updated_us=micros(updated_at), updated_at=updated_at)
    plan.thread_inc["version"] = 1
    plan.refs = {**old_refs, **plan.refs}
    return plan, added
