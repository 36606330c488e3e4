"""Deterministic test data: messages of about 200 characters and threads with indexed keys.

The store and the baselines get the same documents: a baseline stores a message as the JSON of
``Message.model_dump(mode="json")``, which is what the store holds for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tyler_core import Message, Thread

__all__ = ["RawThread", "canonical", "make_message", "make_thread", "raw_message", "raw_thread"]

_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
_TEXT = (
    "the agent looked up the order and found that the parcel left the warehouse on monday so it "
    "should arrive before the weekend unless the carrier reports a delay at the depot"
)
_WORDS = _TEXT.split(" ")


def _text(n: int) -> str:
    """About 200 characters of text that differ per ``n``."""
    words = [_WORDS[(n * 7 + i) % len(_WORDS)] for i in range(40)]
    return f"[{n}] " + " ".join(words)[:190]


def make_message(n: int, *, sequence: int | None = None) -> Message:
    """Message number ``n`` (user and assistant alternate)."""
    return Message(
        id=f"m{n}",
        role="user" if n % 2 else "assistant",
        sequence=sequence,
        content=_text(n),
        timestamp=_EPOCH + timedelta(seconds=n),
        metrics={"tokens": 40 + n % 7},
    )


def thread_keys(i: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The attributes and source of thread number ``i``: each has one unique value."""
    attributes = {"customer": f"c{i:07d}", "tier": ("free", "pro", "team")[i % 3]}
    source = {"name": "slack", "channel": f"C{i:07d}", "thread_ts": f"{1_700_000_000 + i}.0001"}
    return attributes, source


def make_thread(i: int, messages: int, *, prefix: str = "t") -> Thread:
    """Thread number ``i`` with ``messages`` messages, attributes and a source."""
    attributes, source = thread_keys(i)
    thread = Thread(
        id=f"{prefix}{i:07d}",
        title=f"Thread {i}",
        attributes=attributes,
        source=source,
        created_at=_EPOCH,
    )
    thread.messages = [make_message(n, sequence=n) for n in range(1, messages + 1)]
    return thread


def canonical(value: Any) -> str:
    """Canonical JSON of a value (sorted keys, no spaces), as lookup tables hold it."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(slots=True)
class RawThread:
    """A thread as the baselines store it: header fields, message JSON, lookup keys."""

    id: str
    title: str
    created_at: int  # microseconds since the epoch
    updated_at: int
    attributes: str
    source: str
    version: int
    messages: list[tuple[str, int, str]] = field(default_factory=list)  # (id, sequence, json)
    keys: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, key, canonical)


def micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch."""
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def raw_message(message: Message) -> tuple[str, int, str]:
    """``(id, sequence, json)`` of a message, as a baseline stores it."""
    return message.id, message.sequence or 0, json.dumps(message.model_dump(mode="json"))


def raw_thread(thread: Thread, *, prefix: str = "") -> RawThread:
    """The baseline's form of ``thread`` (its id gets ``prefix``)."""
    keys = [("a", k, canonical(v)) for k, v in thread.attributes.items()]
    keys += [("s", k, canonical(v)) for k, v in (thread.source or {}).items()]
    return RawThread(
        id=prefix + thread.id,
        title=thread.title or "",
        created_at=micros(thread.created_at),
        updated_at=micros(thread.updated_at),
        attributes=json.dumps(thread.attributes),
        source=json.dumps(thread.source),
        version=1,
        messages=[raw_message(m) for m in thread.messages],
        keys=keys,
    )
