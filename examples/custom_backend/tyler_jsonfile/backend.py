"""JSONFileBackend: one JSON file per thread, written atomically with a rename."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Self
from urllib.parse import unquote, urlsplit

from typing_extensions import override

from tyler_core import (
    Capabilities,
    ConcurrencyError,
    Message,
    StorageBackend,
    StoreOptions,
    Thread,
    ThreadChanges,
    ThreadNotFoundError,
    canonical_json,
    set_incarnation,
)
from tyler_core.settings import refuse_extra_options

__all__ = ["JSONFileBackend"]

_LOCKS: dict[Path, asyncio.Lock] = {}
_WORD = re.compile(r"\w+")


def _file_name(thread_id: str) -> str:
    # Thread ids may hold any character: name files by a digest instead.
    return hashlib.sha256(thread_id.encode()).hexdigest() + ".json"


class JSONFileBackend(StorageBackend):
    """Threads as files in ``DIRECTORY/NAMESPACE``; the URL is ``jsonfile:///DIRECTORY``."""

    capabilities = Capabilities(search=True, ttl=True, shared_across_instances=True)

    def __init__(self, directory: Path, options: StoreOptions) -> None:
        self._dir = directory / options.namespace

    @classmethod
    @override
    def from_url(cls, url: str, options: StoreOptions) -> Self:
        path = unquote(urlsplit(url).path)
        if not path:
            raise ValueError("a jsonfile URL names a directory: jsonfile:///path/to/dir")
        refuse_extra_options(options, "the jsonfile backend")  # it has no driver to pass them to
        return cls(Path(path), options)

    @property
    def _lock(self) -> asyncio.Lock:
        return _LOCKS.setdefault(self._dir.resolve(), asyncio.Lock())

    @override
    async def open(self) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)

    @override
    async def close(self) -> None:
        return None

    @override
    async def purge(self) -> None:
        async with self._lock:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir.mkdir(parents=True, exist_ok=True)

    @override
    async def drop(self) -> None:
        # The namespace is its directory: remove it, unlike purge(), which leaves it empty.
        async with self._lock:
            shutil.rmtree(self._dir, ignore_errors=True)
        _LOCKS.pop(self._dir.resolve(), None)

    # -- files ---------------------------------------------------------------------------------

    def _read(self, thread_id: str) -> dict[str, Any] | None:
        try:
            document: dict[str, Any] = json.loads((self._dir / _file_name(thread_id)).read_text())
        except FileNotFoundError:
            return None
        expires = document.get("expires_at")
        if expires is not None and time.time() >= expires:
            return None
        return document

    def _write(self, thread_id: str, document: dict[str, Any]) -> None:
        fd, temporary = tempfile.mkstemp(dir=self._dir, suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(document, handle, ensure_ascii=False)
        os.replace(temporary, self._dir / _file_name(thread_id))

    def _all(self) -> list[dict[str, Any]]:
        documents = []
        for path in self._dir.glob("*.json"):
            document = json.loads(path.read_text())
            expires = document.get("expires_at")
            if expires is None or time.time() < expires:
                documents.append(document)
        return documents

    @staticmethod
    def _thread(document: Mapping[str, Any]) -> Thread:
        thread = set_incarnation(
            Thread.model_validate_json(document["thread"]), document.get("incarnation")
        )
        thread.messages = sorted(
            (Message.model_validate_json(m) for m in document["messages"].values()),
            key=lambda m: m.sequence or 0,
        )
        return thread

    @staticmethod
    def _expiry(ttl: float | None) -> float | None:
        return None if ttl is None else time.time() + ttl

    # -- the contract --------------------------------------------------------------------------

    @override
    async def write(self, changes: ThreadChanges) -> None:
        async with self._lock:
            current = self._read(changes.thread.id)
            stored = 0 if current is None else Thread.model_validate_json(current["thread"]).version
            if changes.expected_version is not None and stored != changes.expected_version:
                raise ConcurrencyError(f"thread {changes.thread.id!r} is at version {stored}")
            # A thread deleted and stored again under its id is another thread: its token differs.
            token = changes.incarnation
            if current is not None and changes.expected_version:
                token = current.get("incarnation")
                if changes.expected_incarnation not in (None, token):
                    raise ConcurrencyError(f"thread {changes.thread.id!r} was stored again")
            header = changes.thread.model_copy(
                update={"version": changes.version, "updated_at": changes.updated_at}
            )
            if changes.full or current is None:
                messages = {m.id: m.model_dump_json() for m in changes.messages}
            else:
                messages = dict(current["messages"])
                for mid in changes.removed:
                    messages.pop(mid, None)
                for message in (*changes.added, *changes.changed):
                    messages[message.id] = message.model_dump_json()
            self._write(
                header.id,
                {
                    "thread": header.model_dump_json(exclude={"messages"}),
                    "incarnation": token,
                    "messages": messages,
                    "ttl": changes.ttl,
                    "expires_at": self._expiry(changes.ttl),
                },
            )

    @override
    async def append(
        self, thread_id: str, messages: Sequence[Message], *, updated_at: datetime
    ) -> list[Message]:
        async with self._lock:
            document = self._read(thread_id)
            if document is None:
                raise ThreadNotFoundError(f"no thread {thread_id!r}")
            thread = self._thread(document)
            if any(m.id in document["messages"] for m in messages):
                raise ValueError(f"thread {thread_id!r} already has one of these message ids")
            highest = max((m.sequence or 0 for m in thread.messages), default=0)
            added = [
                m.model_copy(deep=True, update={"sequence": highest + i})
                for i, m in enumerate(messages, start=1)
            ]
            for message in added:
                document["messages"][message.id] = message.model_dump_json()
            header = thread.model_copy(
                update={"version": thread.version + 1, "updated_at": updated_at}
            )
            document["thread"] = header.model_dump_json(exclude={"messages"})
            document["expires_at"] = self._expiry(document.get("ttl"))
            self._write(thread_id, document)
            return added

    @override
    async def delete(self, thread_id: str) -> bool:
        async with self._lock:
            if self._read(thread_id) is None:
                return False
            (self._dir / _file_name(thread_id)).unlink()
            return True

    @override
    async def get(self, thread_id: str) -> Thread | None:
        async with self._lock:
            document = self._read(thread_id)
        return None if document is None else self._thread(document)

    async def _select(self, keep: Any, limit: int | None, offset: int) -> list[Thread]:
        async with self._lock:
            threads = [self._thread(d) for d in self._all()]
        threads = [t for t in threads if keep(t)]
        threads.sort(key=lambda t: (t.updated_at, t.id), reverse=True)
        return threads[offset : None if limit is None else offset + limit]

    @staticmethod
    def _holds(document: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> bool:
        return document is not None and all(
            key in document and canonical_json(document[key]) == canonical_json(value)
            for key, value in wanted.items()
        )

    @override
    async def list_page(self, *, limit: int | None, offset: int) -> list[Thread]:
        return await self._select(lambda t: True, limit, offset)

    @override
    async def find_by_attributes(
        self, attributes: Mapping[str, Any], *, limit: int | None, offset: int
    ) -> list[Thread]:
        return await self._select(lambda t: self._holds(t.attributes, attributes), limit, offset)

    @override
    async def find_by_source(
        self, name: str, properties: Mapping[str, Any], *, limit: int | None, offset: int
    ) -> list[Thread]:
        return await self._select(
            lambda t: self._holds(t.source, {"name": name}) and self._holds(t.source, properties),
            limit,
            offset,
        )

    @override
    async def count(self) -> int:
        async with self._lock:
            return len(self._all())

    @override
    async def search(
        self, words: Sequence[str], *, limit: int, offset: int
    ) -> tuple[list[Thread], int]:
        wanted = set(words)

        def text(m: Message) -> str:
            if isinstance(m.content, list):
                return " ".join(str(p.get("text", "")) for p in m.content)
            return m.content or ""

        def matches(t: Thread) -> bool:
            return any(wanted <= set(_WORD.findall(text(m).lower())) for m in t.messages)

        everything = await self._select(matches, None, 0)
        return everything[offset : offset + limit], len(everything)
