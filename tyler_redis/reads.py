"""The read side of :class:`~tyler_redis.backend.RedisBackend`: get, list, find and count.

:class:`_Reads`, a mixin the backend inherits, reads a thread whole in one script (pipelined for
a page), a page of the list through :mod:`tyler_redis.listing`, and lookups through the lookup
sets: it checks every hit against the thread's header and sweeps the members it found stale.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError
from typing_extensions import override

from tyler_core.backend import StorageBackend
from tyler_core.jsonvalues import json_equal
from tyler_core.models import Thread
from tyler_redis import layout, listing, scripts
from tyler_redis.layout import Layout

__all__ = ["_Reads"]

logger = logging.getLogger("tyler_redis")

_BATCH = 256


def _contains(document: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> bool:
    if document is None:
        return False
    return all(key in document and json_equal(document[key], v) for key, v in wanted.items())


class _Reads(StorageBackend):
    """The read methods of :class:`~tyler_redis.backend.RedisBackend` (a mixin: the backend
    holds the client, the layout and the list index, and runs the scripts)."""

    _layout: Layout
    _list: listing.ListIndex
    stale_entry_grace: float
    expiry_margin: float

    if TYPE_CHECKING:

        @property
        def client(self) -> Any: ...

        async def _run(
            self, script: scripts.Script, keys: Sequence[str], args: Sequence[Any]
        ) -> Any: ...

        async def _pipelined(self, build: Callable[[Any], None]) -> list[Any]: ...

    async def _sweep(self, keys: list[str], members: Iterable[bytes]) -> None:
        """Remove lookup-set members a reader found invalid once they are old (best effort: a
        read never fails for its cleanup)."""
        members = list(members)
        if not members:
            return
        try:
            await self._run(scripts.INDEX_SWEEP, keys, [self.stale_entry_grace, *members])
        except RedisError as exc:
            logger.warning("index sweep skipped: %s", type(exc).__name__)
        else:
            logger.debug("swept up to %d stale index entries", len(members))

    # -- reads ---------------------------------------------------------------------------------

    @staticmethod
    def _decode_read(reply: Any) -> Thread | None:
        if reply is None:
            return None
        header, messages, order = reply
        return layout.decode_thread(header, layout.pairs(messages), order)

    def _read_keys(self, thread_id: str) -> list[str]:
        header, messages, _, order = self._layout.thread_keys(thread_id)
        return [header, messages, order]

    @override
    async def get(self, thread_id: str) -> Thread | None:
        reply = await self._run(scripts.READ, self._read_keys(thread_id), [])
        return self._decode_read(reply)

    async def _load(self, thread_ids: Sequence[str]) -> list[Thread]:
        """Whole threads, in the given order; threads gone since are left out."""
        threads: list[Thread] = []
        for start in range(0, len(thread_ids), _BATCH):
            batch = thread_ids[start : start + _BATCH]

            def build(pipe: Any, batch: Sequence[str] = batch) -> None:
                for thread_id in batch:
                    keys = self._read_keys(thread_id)
                    pipe.execute_command("EVALSHA", scripts.READ.sha, 3, *keys)

            for reply in await self._pipelined(build):
                thread = self._decode_read(reply)
                if thread is not None:
                    threads.append(thread)
        return threads

    async def _headers(self, thread_ids: Sequence[str]) -> list[dict[bytes, bytes]]:
        """The header hash of each thread (empty for threads that do not exist)."""

        headers: list[dict[bytes, bytes]] = []
        for start in range(0, len(thread_ids), _BATCH):
            batch = thread_ids[start : start + _BATCH]

            def build(pipe: Any, batch: Sequence[str] = batch) -> None:
                for thread_id in batch:
                    pipe.hgetall(self._layout.thread_keys(thread_id)[0])

            headers += [dict(h) for h in await self._pipelined(build)]
        return headers

    async def _read_list(
        self, offset: int, limit: int | None
    ) -> tuple[listing.View, dict[str, listing.Check]]:
        return await self._list.read(
            offset, limit, grace=self.stale_entry_grace, margin=self.expiry_margin
        )

    @override
    async def list_page(self, *, limit: int | None, offset: int) -> list[Thread]:
        if limit == 0:
            return []
        view, checks = await self._read_list(offset, limit)
        return await self._load(listing.page_ids(view, checks, offset, limit))

    async def _lookup(
        self, keys: list[str], matches: Callable[[Thread], bool], limit: int | None, offset: int
    ) -> list[Thread]:
        """Threads in every one of the lookup sets ``keys`` that really ``match``, in order."""
        members = await self.client.sinter(keys)
        by_member = {m: layout.id_of_lookup_member(m) for m in members}
        ids = sorted(set(by_member.values()))
        headers = dict(zip(ids, await self._headers(ids), strict=True))
        # A member the header does not name is stale, but the thread may still match: a save
        # since the set read gave it a new member, yet kept the looked-up values. The header,
        # read after the sets, says so without reading the sets again.
        await self._sweep(keys, (m for m, i in by_member.items() if headers[i].get(b"am") != m))
        found: dict[str, Thread] = {}
        for thread_id, header in headers.items():
            if b"d" not in header:  # gone
                continue
            thread = layout.decode_header(header)
            if matches(thread):
                found[thread_id] = thread
        ordered = sorted(found.values(), key=lambda t: (t.updated_at, t.id), reverse=True)
        end = None if limit is None else offset + limit
        # Loaded again whole: keep only threads that still match.
        loaded = await self._load([t.id for t in ordered[offset:end]])
        return [t for t in loaded if matches(t)]

    @override
    async def find_by_attributes(
        self, attributes: Mapping[str, Any], *, limit: int | None, offset: int
    ) -> list[Thread]:
        keys = sorted({self._layout.attribute_key(k, v) for k, v in attributes.items()})
        return await self._lookup(
            keys, lambda t: _contains(t.attributes, attributes), limit, offset
        )

    @override
    async def find_by_source(
        self,
        name: str,
        properties: Mapping[str, Any],
        *,
        limit: int | None,
        offset: int,
    ) -> list[Thread]:
        wanted = {"name": name}
        keys = {self._layout.source_key("name", name)}
        keys |= {self._layout.source_key(k, v) for k, v in properties.items()}

        def matches(thread: Thread) -> bool:
            return _contains(thread.source, wanted) and _contains(thread.source, properties)

        return await self._lookup(sorted(keys), matches, limit, offset)

    @override
    async def count(self) -> int:
        view, checks = await self._read_list(0, 0)
        return listing.live_count(view, checks)
