"""Raw-driver baselines: the minimal work each workload needs, written against the driver alone.

A baseline creates its own tables or keys under the ``bench_raw`` prefix, next to the store's data
on the same server, and drops them afterwards. It imports nothing from the library but the test
data's plain form (:class:`benchmarks.data.RawThread`).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any

from benchmarks.data import RawThread

__all__ = ["Baseline", "Doc", "decode", "make_baseline"]

Doc = dict[str, Any]


def decode(
    thread_id: str, attributes: str, source: str, version: int, messages: Iterable[str]
) -> Doc:
    """A thread as a baseline returns it: its JSON fields and one decoded document per message."""
    return {
        "id": thread_id,
        "attributes": json.loads(attributes),
        "source": json.loads(source),
        "version": version,
        "messages": [json.loads(m) for m in messages],
    }


class Baseline(ABC):
    """One server's raw baseline. Methods mirror the store operations the workloads time."""

    @abstractmethod
    async def open(self) -> None:
        """Connect."""

    @abstractmethod
    async def close(self) -> None:
        """Disconnect."""

    @abstractmethod
    async def reset(self) -> None:
        """Drop and recreate the baseline's tables or keys, empty."""

    @abstractmethod
    async def drop(self) -> None:
        """Remove every table or key the baseline created."""

    @abstractmethod
    async def server_version(self) -> str:
        """The server's name and version."""

    @abstractmethod
    async def insert_threads(self, threads: Sequence[RawThread]) -> None:
        """Bulk-insert threads with their messages and lookup keys (population, not timed)."""

    @abstractmethod
    async def save_new(self, thread: RawThread) -> None:
        """Insert one new thread with its messages and keys in one transaction (W5)."""

    @abstractmethod
    async def append_one(
        self, thread_id: str, message: tuple[str, int, str], updated_at: int, version: int
    ) -> None:
        """W1: insert one message and update the thread row, in one transaction."""

    @abstractmethod
    async def append_locked(self, thread_id: str, message: Doc, updated_at: int) -> int:
        """W5: append with the sequence assigned server-side (highest + 1) under a lock or
        transaction; returns the sequence."""

    @abstractmethod
    async def get(self, thread_id: str) -> Doc | None:
        """W2: the thread row and its messages, each message's JSON decoded."""

    @abstractmethod
    async def page(self, limit: int, offset: int) -> list[Doc]:
        """W3: a page of threads by ``updated_at`` desc, ``id`` desc, with their messages."""

    @abstractmethod
    async def find(self, kind: str, key: str, value: str) -> list[Doc]:
        """W4: threads whose lookup key ``(kind, key)`` holds canonical JSON ``value``, through
        an index, with their messages."""

    async def find_source(self, name: str, key: str, value: str) -> list[Doc]:
        """W4: threads whose source has ``name`` and ``key == value`` (one index lookup on the
        selective key, the name checked on the rows)."""
        return [
            d for d in await self.find("s", key, value) if (d["source"] or {}).get("name") == name
        ]


def make_baseline(backend: str, url: str) -> Baseline:
    """The baseline for a benchmark backend name, on the server of ``url``."""
    if backend == "memory":
        from benchmarks.baselines.memory import DictBaseline

        return DictBaseline()
    if backend in ("sqlite", "postgres", "mysql"):
        from benchmarks.baselines.sql import SQLBaseline

        return SQLBaseline.for_url(url)
    if backend == "redis":
        from benchmarks.baselines.redis import RedisBaseline

        return RedisBaseline(url)
    if backend == "mongo":
        from benchmarks.baselines.mongo import MongoBaseline

        return MongoBaseline(url)
    raise ValueError(f"no baseline for {backend!r}")
