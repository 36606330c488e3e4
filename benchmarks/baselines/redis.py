"""The Redis baseline: a hash per thread, a hash and a sorted set of message ids per thread, a
sorted set for recency and one set per lookup key. Writes go in one MULTI; reads in one
pipeline round trip where the data allows it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from benchmarks.baselines import Baseline, Doc, decode
from benchmarks.config import RAW_PREFIX
from benchmarks.data import RawThread

__all__ = ["RedisBaseline"]

P = RAW_PREFIX
RECENT = f"{P}:recent"

# KEYS: thread hash, messages hash, order zset, recent zset.
# ARGV: thread id, message id, message JSON with "sequence": null, updated_at.
_APPEND = """
local top = redis.call('ZREVRANGE', KEYS[3], 0, 0, 'WITHSCORES')
local seq = 1
if top[2] then seq = tonumber(top[2]) + 1 end
local doc = string.gsub(ARGV[3], '"sequence": null', '"sequence": ' .. seq, 1)
redis.call('HSET', KEYS[2], ARGV[2], doc)
redis.call('ZADD', KEYS[3], seq, ARGV[2])
redis.call('HSET', KEYS[1], 'updated_at', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
return seq
"""


def _keys(thread_id: str) -> tuple[str, str, str]:
    return f"{P}:t:{thread_id}", f"{P}:m:{thread_id}", f"{P}:o:{thread_id}"


def _lookup(kind: str, key: str, value: str) -> str:
    return f"{P}:k:{kind}:{key}:{value}"


class RedisBaseline(Baseline):
    """redis-py asyncio against ``bench_raw:*`` keys."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._redis: Any = None
        self._append: Any = None

    async def open(self) -> None:
        from redis.asyncio import Redis

        self._redis = Redis.from_url(self._url, max_connections=32)
        self._append = self._redis.register_script(_APPEND)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    async def drop(self) -> None:
        batch: list[Any] = []
        async for key in self._redis.scan_iter(match=f"{P}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await self._redis.unlink(*batch)
                batch = []
        if batch:
            await self._redis.unlink(*batch)

    async def reset(self) -> None:
        await self.drop()

    async def server_version(self) -> str:
        info = await self._redis.info("server")
        return f"Redis {info.get('redis_version', '?')}"

    def _queue(self, pipe: Any, thread: RawThread) -> None:
        head, messages, order = _keys(thread.id)
        pipe.hset(
            head,
            mapping={
                "title": thread.title,
                "attributes": thread.attributes,
                "source": thread.source,
                "version": thread.version,
                "updated_at": thread.updated_at,
            },
        )
        if thread.messages:
            pipe.hset(messages, mapping={mid: doc for mid, _, doc in thread.messages})
            pipe.zadd(order, {mid: seq for mid, seq, _ in thread.messages})
        pipe.zadd(RECENT, {thread.id: thread.updated_at})
        for kind, key, value in thread.keys:
            pipe.sadd(_lookup(kind, key, value), thread.id)

    async def insert_threads(self, threads: Sequence[RawThread]) -> None:
        for start in range(0, len(threads), 1000):
            pipe = self._redis.pipeline(transaction=False)
            for thread in threads[start : start + 1000]:
                self._queue(pipe, thread)
            await pipe.execute()

    async def save_new(self, thread: RawThread) -> None:
        pipe = self._redis.pipeline(transaction=True)
        self._queue(pipe, thread)
        await pipe.execute()

    async def append_one(
        self, thread_id: str, message: tuple[str, int, str], updated_at: int, version: int
    ) -> None:
        head, messages, order = _keys(thread_id)
        mid, seq, doc = message
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(messages, mid, doc)
        pipe.zadd(order, {mid: seq})
        pipe.hset(head, mapping={"updated_at": updated_at, "version": version})
        pipe.zadd(RECENT, {thread_id: updated_at})
        await pipe.execute()

    async def append_locked(self, thread_id: str, message: Doc, updated_at: int) -> int:
        message["sequence"] = None
        keys = [*_keys(thread_id), RECENT]
        args = [thread_id, message["id"], json.dumps(message), updated_at]
        return int(await self._append(keys=keys, args=args))

    async def _fetch(self, ids: Sequence[str]) -> list[Doc]:
        pipe = self._redis.pipeline(transaction=False)
        for thread_id in ids:
            head, messages, order = _keys(thread_id)
            pipe.hmget(head, "attributes", "source", "version")
            pipe.zrange(order, 0, -1)
            pipe.hgetall(messages)
        replies = await pipe.execute()
        docs = []
        for n, thread_id in enumerate(ids):
            (attributes, source, version), order, messages = replies[3 * n : 3 * n + 3]
            if attributes is None:
                continue
            docs.append(
                decode(thread_id, attributes, source, int(version), (messages[m] for m in order))
            )
        return docs

    async def get(self, thread_id: str) -> Doc | None:
        found = await self._fetch([thread_id])
        return found[0] if found else None

    async def page(self, limit: int, offset: int) -> list[Doc]:
        ids = await self._redis.zrevrange(RECENT, offset, offset + limit - 1)
        return await self._fetch([i.decode() for i in ids])

    async def find(self, kind: str, key: str, value: str) -> list[Doc]:
        ids = await self._redis.smembers(_lookup(kind, key, value))
        docs = await self._fetch([i.decode() for i in ids])
        return sorted(docs, key=lambda d: d["id"], reverse=True)
