"""Key names, index members and the stored form of threads and messages.

The namespace is the key prefix: every key starts with ``<namespace>:``, so one ``SCAN``
pattern (and one ACL key pattern, ``~<namespace>:*``) covers a store. A thread's keys,
``<namespace>:t:{<escaped id>}:*``, share the hash tag of its id (``%``, ``{`` and ``}``
percent-escaped, so the tag is well-formed and the mapping one-to-one); the index keys,
``<namespace>:{<namespace>}:*``, share the hash tag of the namespace. See
:mod:`tyler_redis.scripts` for what each key holds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from tyler_core.jsonvalues import canonical_json
from tyler_core.models import TRUSTED, Message, Thread, set_incarnation

__all__ = ["Layout", "decode_header", "decode_thread", "encode_message", "list_prefix"]

_ORIGIN = datetime(1, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_HEADER_FIELDS = {"id", "title", "created_at", "attributes", "source"}


def _escape(thread_id: str) -> str:
    return thread_id.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


def _digest(kind: str, key: str, value: Any) -> str:
    # Hashed, so any key and any value (a 10 MB object, say) makes a short key name. A collision
    # only adds a candidate: readers check every hit against the thread.
    text = f"{key}\0{canonical_json(value)}".encode()
    return f"{kind}:{hashlib.blake2b(text, digest_size=16).hexdigest()}"


class Layout:
    """Key names of one namespace."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.index = f"{namespace}:{{{namespace}}}"
        self.list_key = f"{self.index}:l"
        #: Thread id -> its list members; thread id -> its pending tokens; expiry bounds; and
        #: the mark of an index in this format (see :mod:`tyler_redis.scripts`).
        self.members_key = f"{self.index}:i"
        self.pending_key = f"{self.index}:p"
        self.expiry_key = f"{self.index}:e"
        self.format_key = f"{self.index}:v"
        #: The SCAN pattern that covers every key of the namespace (for purge).
        self.pattern = f"{namespace}:*"

    def thread_keys(self, thread_id: str) -> list[str]:
        """The keys of one thread: header, messages, sequences, sequence order."""
        tag = f"{self.namespace}:t:{{{_escape(thread_id)}}}:"
        return [tag + "h", tag + "m", tag + "q", tag + "s"]

    def lookup_suffixes(
        self, attributes: Mapping[str, Any], source: Mapping[str, Any] | None
    ) -> list[str]:
        """The lookup sets a thread with these attributes and source belongs to."""
        suffixes = [_digest("a", key, value) for key, value in attributes.items()]
        if source is not None:
            suffixes += [_digest("s", key, value) for key, value in source.items()]
        return sorted(set(suffixes))

    def attribute_key(self, key: str, value: Any) -> str:
        """The set of threads whose attribute ``key`` equals ``value``."""
        return f"{self.index}:{_digest('a', key, value)}"

    def source_key(self, key: str, value: Any) -> str:
        """The set of threads whose source property ``key`` equals ``value``."""
        return f"{self.index}:{_digest('s', key, value)}"

    def key_of(self, suffix: str) -> str:
        """The full name of a lookup set."""
        return f"{self.index}:{suffix}"


def list_prefix(thread_id: str, updated_at: datetime) -> bytes:
    """The list member of a thread, without its token.

    Members sort by bytes: 20 digits of microseconds since year 1, then the id in UTF-8 (whose
    byte order is code point order), then NUL (below every id byte, so ``a`` sorts before
    ``ab``), then the token. Read backwards, that is ``updated_at`` desc, then ``id`` desc.
    """
    micros = (updated_at - _ORIGIN) // _MICROSECOND
    return f"{micros:020d}".encode() + thread_id.encode() + b"\0"


def lookup_prefix(thread_id: str) -> bytes:
    """The member of a thread in the lookup sets, without its token."""
    return thread_id.encode() + b"\0"


def id_of_list_member(member: bytes) -> str:
    """The thread id inside a list member."""
    return member[20 : member.rindex(b"\0")].decode()


def id_of_lookup_member(member: bytes) -> str:
    """The thread id inside a lookup-set member."""
    return member[: member.rindex(b"\0")].decode()


def encode_header(thread: Thread) -> str:
    """The thread's own fields (not version, updated_at or messages) as JSON."""
    return thread.model_dump_json(include=_HEADER_FIELDS)


def encode_message(message: Message) -> str:
    """A message as JSON, without its sequence (stored beside it)."""
    return message.model_dump_json(exclude={"sequence"})


def encode_entry(message: Message) -> str:
    """A message as a write sends it: its 20-digit sequence and id (its member of the sequence
    order), NUL (no id holds one), and its JSON."""
    return f"{message.sequence or 0:020d}{message.id}\0{encode_message(message)}"


def encode_suffixes(suffixes: list[str]) -> str:
    """The lookup sets of a state, as stored in its header."""
    return json.dumps(suffixes)


def decode_suffixes(raw: bytes | str) -> list[str]:
    """The lookup sets named in a header (none when empty)."""
    return list(json.loads(raw)) if raw else []


def pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    """A flat Redis field/value reply as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def decode_header(fields: Mapping[bytes, bytes]) -> Thread:
    """A thread, without messages, from its header hash."""
    thread = Thread.model_validate_json(fields[b"d"], context=TRUSTED)
    thread.version = int(fields[b"v"])
    thread.updated_at = datetime.fromisoformat(fields[b"u"].decode())
    token = fields.get(b"n")  # absent on threads stored before tokens existed
    return set_incarnation(thread, None if token is None else token.decode())


def decode_thread(
    header: Sequence[bytes | None], messages: Mapping[bytes, bytes], order: Sequence[bytes]
) -> Thread:
    """A whole thread from its header fields ``v``, ``u``, ``d``, ``n``, its messages and the
    members of its sequence order (``<20-digit sequence><message id>``, in order)."""
    names = (b"v", b"u", b"d", b"n")
    thread = decode_header({k: v for k, v in zip(names, header, strict=True) if v is not None})
    loaded = []
    for entry in order:
        message = Message.model_validate_json(messages[entry[20:]], context=TRUSTED)
        message.sequence = int(entry[:20])
        loaded.append(message)
    thread.messages = loaded
    return thread
