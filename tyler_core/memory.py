"""MemoryBackend: the reference implementation of the contract. One lock, one dict, copies.

``memory://`` is private to its store; ``memory://NAME`` is shared by every store in the process
that uses the same name (and namespace), which is what tests of two instances need.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel
from typing_extensions import override

from tyler_core.backend import Capabilities, StorageBackend
from tyler_core.changes import ThreadChanges
from tyler_core.errors import ConcurrencyError, ThreadNotFoundError
from tyler_core.jsonvalues import json_equal
from tyler_core.models import Message, Thread, set_incarnation
from tyler_core.settings import StoreOptions, refuse_extra_options

__all__ = ["MemoryBackend"]

_WORD = re.compile(r"\w+")
_set = object.__setattr__
_new = object.__new__


@dataclass(slots=True)
class _Stored:
    thread: Thread  # header only: no messages
    messages: dict[str, Message]
    ttl: float | None = None
    expires_at: float | None = None


@dataclass(slots=True)
class _Space:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    threads: dict[str, _Stored] = field(default_factory=dict)


# memory://NAME -> namespace -> data, shared within the process.
_SHARED: dict[str, dict[str, _Space]] = {}


_IMMUTABLE = frozenset({str, int, float, bool, type(None), datetime})
_SEQUENCE = attrgetter("sequence")
_M = TypeVar("_M", bound=BaseModel)


def _copy_value(value: Any) -> Any:
    kind = type(value)
    if kind in _IMMUTABLE:
        return value
    if kind is dict:
        return _copy_dict(value) if value else {}
    if kind is list:
        return [_copy_value(item) for item in value] if value else []
    if isinstance(value, BaseModel):
        return _copy(value)
    return deepcopy(value)


def _copy_dict(original: dict[str, Any]) -> dict[str, Any]:
    duplicate = original.copy()
    for key, value in original.items():
        if type(value) not in _IMMUTABLE:
            duplicate[key] = _copy_value(value)
    return duplicate


def _copy(model: _M) -> _M:
    """A deep copy of a model that shares its immutable leaves (strings, numbers, datetimes):
    several times faster than a JSON round trip, let alone ``model_copy(deep=True)``."""
    duplicate = _new(type(model))
    # What pydantic's own __copy__ sets, with the containers copied.
    _set(duplicate, "__dict__", _copy_dict(model.__dict__))
    _set(duplicate, "__pydantic_fields_set__", set(model.__pydantic_fields_set__))
    _set(duplicate, "__pydantic_extra__", _copy_value(model.__pydantic_extra__))
    private = model.__pydantic_private__
    _set(duplicate, "__pydantic_private__", None if private is None else dict(private))
    return duplicate


def _words(message: Message) -> set[str]:
    content = message.content
    if isinstance(content, list):
        content = " ".join(str(p.get("text", "")) for p in content if p.get("type") == "text")
    return set(_WORD.findall((content or "").lower()))


class MemoryBackend(StorageBackend):
    """Threads in a dict, guarded by one asyncio lock. Nothing survives the process."""

    capabilities = Capabilities(search=True, ttl=True, shared_across_instances=False)

    def __init__(self, name: str, options: StoreOptions) -> None:
        self._name = name
        self._options = options
        self._space = _Space()
        if name:
            self.capabilities = Capabilities(search=True, ttl=True, shared_across_instances=True)

    @classmethod
    @override
    def from_url(cls, url: str, options: StoreOptions) -> Self:
        parts = urlsplit(url or "memory://")
        if parts.path not in ("", "/") or parts.query:
            raise ValueError("a memory URL is memory:// or memory://NAME")
        refuse_extra_options(options, "the memory backend")
        return cls(parts.netloc, options)

    @override
    async def open(self) -> None:
        if self._name:
            spaces = _SHARED.setdefault(self._name, {})
            self._space = spaces.setdefault(self._options.namespace, _Space())

    @override
    async def close(self) -> None:
        return None

    @override
    async def purge(self) -> None:
        async with self._space.lock:
            self._space.threads.clear()

    def _live(self, thread_id: str) -> _Stored | None:
        stored = self._space.threads.get(thread_id)
        expired = stored is not None and stored.expires_at is not None
        if expired and time.monotonic() >= stored.expires_at:  # type: ignore[union-attr,operator]
            del self._space.threads[thread_id]
            return None
        return stored

    def _all_live(self) -> list[_Stored]:
        return [s for tid in list(self._space.threads) if (s := self._live(tid)) is not None]

    @staticmethod
    def _expiry(ttl: float | None) -> float | None:
        return None if ttl is None else time.monotonic() + ttl

    @staticmethod
    def _materialise(stored: _Stored) -> Thread:
        thread = _copy(stored.thread)
        thread.messages = [_copy(m) for m in sorted(stored.messages.values(), key=_SEQUENCE)]
        return thread

    @override
    async def write(self, changes: ThreadChanges) -> None:
        async with self._space.lock:
            current = self._live(changes.thread.id)
            stored_version = current.thread.version if current is not None else 0
            if changes.expected_version is not None and stored_version != changes.expected_version:
                raise ConcurrencyError(
                    f"thread {changes.thread.id!r} is at version {stored_version}, "
                    f"not {changes.expected_version}"
                )
            expected_token = changes.expected_incarnation
            if (
                current is not None
                and changes.expected_version
                and expected_token is not None
                and current.thread.incarnation != expected_token
            ):
                raise ConcurrencyError(
                    f"thread {changes.thread.id!r} was deleted and stored again since it was loaded"
                )
            header = _copy(changes.thread)
            header.messages = []
            header.version = changes.version
            header.updated_at = changes.updated_at
            token: str | None = changes.incarnation
            if current is not None and changes.expected_version:
                token = current.thread.incarnation  # an update keeps the stored token
            set_incarnation(header, token)
            if changes.full or current is None:
                messages = {m.id: _copy(m) for m in changes.messages}
            else:
                messages = dict(current.messages)
                for mid in changes.removed:
                    messages.pop(mid, None)
                for message in (*changes.added, *changes.changed):
                    messages[message.id] = _copy(message)
            self._space.threads[header.id] = _Stored(
                header, messages, changes.ttl, self._expiry(changes.ttl)
            )

    @override
    async def append(
        self,
        thread_id: str,
        messages: Sequence[Message],
        *,
        updated_at: datetime,
    ) -> list[Message]:
        async with self._space.lock:
            stored = self._live(thread_id)
            if stored is None:
                raise ThreadNotFoundError(f"no thread {thread_id!r}")
            for message in messages:
                if message.id in stored.messages:
                    raise ValueError(f"thread {thread_id!r} already has a message {message.id!r}")
            highest = max((m.sequence or 0 for m in stored.messages.values()), default=0)
            added = []
            for offset, message in enumerate(messages, start=1):
                copy = _copy(message)
                copy.sequence = highest + offset
                added.append(copy)
            for copy in added:
                stored.messages[copy.id] = _copy(copy)
            stored.thread.version += 1
            stored.thread.updated_at = updated_at
            stored.expires_at = self._expiry(stored.ttl)
            return added

    @override
    async def delete(self, thread_id: str) -> bool:
        async with self._space.lock:
            return self._live(thread_id) is not None and bool(
                self._space.threads.pop(thread_id, None)
            )

    @override
    async def get(self, thread_id: str) -> Thread | None:
        async with self._space.lock:
            stored = self._live(thread_id)
            return None if stored is None else self._materialise(stored)

    def _page(self, matches: list[_Stored], limit: int | None, offset: int) -> list[Thread]:
        matches.sort(key=lambda s: (s.thread.updated_at, s.thread.id), reverse=True)
        end = None if limit is None else offset + limit
        return [self._materialise(s) for s in matches[offset:end]]

    @override
    async def list_page(self, *, limit: int | None, offset: int) -> list[Thread]:
        async with self._space.lock:
            return self._page(self._all_live(), limit, offset)

    @staticmethod
    def _contains(document: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
        return all(key in document and json_equal(document[key], v) for key, v in wanted.items())

    @override
    async def find_by_attributes(
        self, attributes: Mapping[str, Any], *, limit: int | None, offset: int
    ) -> list[Thread]:
        async with self._space.lock:
            matches = [
                s for s in self._all_live() if self._contains(s.thread.attributes, attributes)
            ]
            return self._page(matches, limit, offset)

    @override
    async def find_by_source(
        self,
        name: str,
        properties: Mapping[str, Any],
        *,
        limit: int | None,
        offset: int,
    ) -> list[Thread]:
        async with self._space.lock:
            matches = [
                s
                for s in self._all_live()
                if s.thread.source is not None
                and self._contains(s.thread.source, {"name": name})
                and self._contains(s.thread.source, properties)
            ]
            return self._page(matches, limit, offset)

    @override
    async def count(self) -> int:
        async with self._space.lock:
            return len(self._all_live())

    @override
    async def search(
        self, words: Sequence[str], *, limit: int, offset: int
    ) -> tuple[list[Thread], int]:
        wanted = set(words)
        async with self._space.lock:
            matches = [
                s for s in self._all_live() if any(wanted <= _words(m) for m in s.messages.values())
            ]
            return self._page(matches, limit, offset), len(matches)
