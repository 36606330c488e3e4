"""The Mongo baseline: a threads collection (with a ``[{k, v}]`` array of canonical keys under a
multikey index) and a messages collection keyed by ``(thread_id, seq)``, through PyMongo's
``AsyncMongoClient``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from benchmarks.baselines import Baseline, Doc
from benchmarks.config import RAW_PREFIX
from benchmarks.data import RawThread

__all__ = ["MongoBaseline"]


def _thread_doc(thread: RawThread) -> dict[str, Any]:
    return {
        "_id": thread.id,
        "title": thread.title,
        "created_at": thread.created_at,
        "updated_at": thread.updated_at,
        "attributes": json.loads(thread.attributes),
        "source": json.loads(thread.source),
        "version": thread.version,
        "last_seq": max((seq for _, seq, _ in thread.messages), default=0),
        "kv": [{"k": f"{kind}:{key}", "v": value} for kind, key, value in thread.keys],
    }


def _message_docs(thread: RawThread) -> list[dict[str, Any]]:
    return [
        {"thread_id": thread.id, "seq": seq, "id": mid, "doc": json.loads(doc)}
        for mid, seq, doc in thread.messages
    ]


class MongoBaseline(Baseline):
    """Raw PyMongo against ``bench_raw_*`` collections."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._client: Any = None
        self._db: Any = None

    async def open(self) -> None:
        from pymongo import AsyncMongoClient

        self._client = AsyncMongoClient(self._url, serverSelectionTimeoutMS=5000)
        self._db = self._client[urlsplit(self._url).path.lstrip("/") or "tyler"]
        self._threads = self._db[f"{RAW_PREFIX}_threads"]
        self._messages = self._db[f"{RAW_PREFIX}_messages"]

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def drop(self) -> None:
        await self._threads.drop()
        await self._messages.drop()

    async def reset(self) -> None:
        await self.drop()
        await self._messages.create_index([("thread_id", 1), ("seq", 1)], unique=True)
        await self._threads.create_index([("updated_at", -1), ("_id", -1)])
        await self._threads.create_index([("kv.k", 1), ("kv.v", 1)])

    async def server_version(self) -> str:
        info = await self._db.command("buildInfo")
        return f"MongoDB wire protocol, reports {info.get('version', '?')}"

    async def insert_threads(self, threads: Sequence[RawThread]) -> None:
        for start in range(0, len(threads), 1000):
            chunk = threads[start : start + 1000]
            await self._threads.insert_many([_thread_doc(t) for t in chunk], ordered=False)
            messages = [m for t in chunk for m in _message_docs(t)]
            if messages:
                await self._messages.insert_many(messages, ordered=False)

    async def save_new(self, thread: RawThread) -> None:
        await self._threads.insert_one(_thread_doc(thread))
        messages = _message_docs(thread)
        if messages:
            await self._messages.insert_many(messages)

    async def append_one(
        self, thread_id: str, message: tuple[str, int, str], updated_at: int, version: int
    ) -> None:
        mid, seq, doc = message
        await self._messages.insert_one(
            {"thread_id": thread_id, "seq": seq, "id": mid, "doc": json.loads(doc)}
        )
        await self._threads.update_one(
            {"_id": thread_id},
            {"$set": {"updated_at": updated_at, "version": version, "last_seq": seq}},
        )

    async def append_locked(self, thread_id: str, message: Doc, updated_at: int) -> int:
        head = await self._threads.find_one_and_update(
            {"_id": thread_id},
            {"$inc": {"last_seq": 1, "version": 1}, "$set": {"updated_at": updated_at}},
            projection={"last_seq": 1},
            return_document=True,
        )
        sequence = int(head["last_seq"])
        message["sequence"] = sequence
        await self._messages.insert_one(
            {"thread_id": thread_id, "seq": sequence, "id": message["id"], "doc": message}
        )
        return sequence

    async def _with_messages(self, heads: list[dict[str, Any]]) -> list[Doc]:
        if not heads:
            return []
        ids = [h["_id"] for h in heads]
        by_thread: dict[str, list[Any]] = {i: [] for i in ids}
        cursor = self._messages.find(
            {"thread_id": {"$in": ids}}, {"_id": 0, "thread_id": 1, "doc": 1}
        )
        async for row in cursor.sort([("thread_id", 1), ("seq", 1)]):
            by_thread[row["thread_id"]].append(row["doc"])
        return [
            {
                "id": h["_id"],
                "attributes": h["attributes"],
                "source": h["source"],
                "version": h["version"],
                "messages": by_thread[h["_id"]],
            }
            for h in heads
        ]

    _HEAD = {"attributes": 1, "source": 1, "version": 1}

    async def get(self, thread_id: str) -> Doc | None:
        head = await self._threads.find_one({"_id": thread_id}, self._HEAD)
        return None if head is None else (await self._with_messages([head]))[0]

    async def page(self, limit: int, offset: int) -> list[Doc]:
        cursor = self._threads.find({}, self._HEAD).sort([("updated_at", -1), ("_id", -1)])
        heads = await cursor.skip(offset).limit(limit).to_list()
        return await self._with_messages(heads)

    async def find(self, kind: str, key: str, value: str) -> list[Doc]:
        query = {"kv": {"$elemMatch": {"k": f"{kind}:{key}", "v": value}}}
        cursor = self._threads.find(query, self._HEAD).sort([("updated_at", -1), ("_id", -1)])
        return await self._with_messages(await cursor.to_list())
