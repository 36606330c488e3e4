"""The memory baseline: plain dicts of JSON strings, with a dict index for lookups."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

from benchmarks.baselines import Baseline, Doc, decode
from benchmarks.data import RawThread

__all__ = ["DictBaseline"]


class DictBaseline(Baseline):
    """Threads as dicts, messages as JSON strings, one lock (what a hand-written cache does)."""

    def __init__(self) -> None:
        self._threads: dict[str, RawThread] = {}
        self._messages: dict[str, dict[int, str]] = {}
        self._index: dict[tuple[str, str, str], set[str]] = {}
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def reset(self) -> None:
        self._threads.clear()
        self._messages.clear()
        self._index.clear()

    async def drop(self) -> None:
        await self.reset()

    async def server_version(self) -> str:
        return "Python dicts"

    async def insert_threads(self, threads: Sequence[RawThread]) -> None:
        for thread in threads:
            await self.save_new(thread)

    async def save_new(self, thread: RawThread) -> None:
        async with self._lock:
            self._threads[thread.id] = thread
            self._messages[thread.id] = {seq: doc for _, seq, doc in thread.messages}
            for key in thread.keys:
                self._index.setdefault(key, set()).add(thread.id)

    async def append_one(
        self, thread_id: str, message: tuple[str, int, str], updated_at: int, version: int
    ) -> None:
        async with self._lock:
            self._messages[thread_id][message[1]] = message[2]
            thread = self._threads[thread_id]
            thread.updated_at, thread.version = updated_at, version

    async def append_locked(self, thread_id: str, message: Doc, updated_at: int) -> int:
        async with self._lock:
            messages = self._messages[thread_id]
            sequence = max(messages, default=0) + 1
            message["sequence"] = sequence
            messages[sequence] = json.dumps(message)
            thread = self._threads[thread_id]
            thread.updated_at, thread.version = updated_at, thread.version + 1
            return sequence

    def _doc(self, thread: RawThread) -> Doc:
        messages = self._messages[thread.id]
        return decode(
            thread.id,
            thread.attributes,
            thread.source,
            thread.version,
            (messages[s] for s in sorted(messages)),
        )

    async def get(self, thread_id: str) -> Doc | None:
        async with self._lock:
            thread = self._threads.get(thread_id)
            return None if thread is None else self._doc(thread)

    async def page(self, limit: int, offset: int) -> list[Doc]:
        async with self._lock:
            ordered = sorted(self._threads.values(), key=lambda t: (t.updated_at, t.id))
            ordered.reverse()
            return [self._doc(t) for t in ordered[offset : offset + limit]]

    async def find(self, kind: str, key: str, value: str) -> list[Doc]:
        async with self._lock:
            ids = self._index.get((kind, key, value), set())
            found = sorted((self._threads[i] for i in ids), key=lambda t: (t.updated_at, t.id))
            return [self._doc(t) for t in reversed(found)]
