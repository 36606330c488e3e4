"""The read side of :class:`~tyler_mongo.backend.MongoBackend`: get, list, find, count and search.

:class:`_Reads`, a mixin the backend inherits, reads a page of thread documents in order, then
the message documents they reference (:mod:`tyler_mongo.documents` turns both back into
threads), and reads again a thread whose writer deleted what it replaced in between.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pymongo import DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from typing_extensions import override

from tyler_core.backend import StorageBackend
from tyler_core.models import Thread, utc_now
from tyler_mongo.documents import lookup_array, read_message, read_thread

__all__ = ["_Reads"]

Document = dict[str, Any]

# A reader retries when a writer deleted what it replaced between the reader's two queries.
_READ_ATTEMPTS = 20
#: The first integer past int32 (a limit or skip some servers refuse).
_INT32_END = 2**31


def _live(now: datetime) -> Document:
    # Threads without expiry (``expires_at`` null) and those not expired yet. (Not the shorter
    # ``{$not: {$lte: now}}``: the mongoeco test server does not match null with it.)
    return {"$or": [{"expires_at": None}, {"expires_at": {"$gt": now}}]}


class _Reads(StorageBackend):
    """The read methods of :class:`~tyler_mongo.backend.MongoBackend` (a mixin: the backend
    holds the client and the two collections)."""

    if TYPE_CHECKING:

        def _collections(
            self,
        ) -> tuple[AsyncCollection[Document], AsyncCollection[Document]]: ...

    async def _materialise(self, documents: list[Document]) -> list[Thread]:
        """Threads with their committed messages, in the order of ``documents``.

        A writer deletes the documents it replaced after its commit; a reader that read the
        thread document before that commit and the messages after it misses some, and reads
        that thread again.
        """
        threads, messages = self._collections()
        result: dict[str, Thread] = {}
        pending = list(documents)
        for _ in range(_READ_ATTEMPTS):
            if not pending:
                break
            found: dict[Any, Document] = {}
            ids = [d["_id"] for d in pending]
            # One thread (``get``): an equality; several: a ``$in``. Both use the ``thread`` index.
            wanted = ids[0] if len(ids) == 1 else {"$in": ids}
            cursor = messages.find({"t": wanted}, projection={"text": False})
            async for message in cursor:
                found[message["_id"]] = message
            retry = []
            for document in pending:
                refs = (document.get("refs") or {}).values()
                stored = [found.get(ref["o"]) for ref in refs]
                if any(m is None for m in stored):
                    retry.append(document["_id"])
                    continue
                ordered = sorted((m for m in stored if m is not None), key=lambda m: m["s"])
                result[document["_id"]] = read_thread(document, [read_message(m) for m in ordered])
            pending = []
            if retry:
                query = {"_id": {"$in": retry}, **_live(utc_now())}
                pending = [d async for d in threads.find(query)]
        if pending:
            raise RuntimeError(
                f"thread {pending[0]['_id']!r} references message documents that do not exist"
            )
        # A thread deleted while it was being read is left out.
        return [result[d["_id"]] for d in documents if d["_id"] in result]

    async def _page(self, query: Document, limit: int | None, offset: int) -> list[Thread]:
        if limit == 0:
            return []
        threads, _ = self._collections()
        query = {**query, **_live(utc_now())}
        # Some wire-compatible servers refuse a limit or skip past int32. No page of 2**31
        # threads fits in memory, so such a limit is "all"; such a skip is sent only when the
        # query has more threads than it skips (MongoDB takes int64).
        if limit is not None and limit >= _INT32_END:
            limit = None
        if offset >= _INT32_END and await threads.count_documents(query) <= offset:
            return []
        cursor = threads.find(query, projection={"attrs": 0, "src": 0})
        cursor = cursor.sort([("updated_us", DESCENDING), ("_id", DESCENDING)]).skip(offset)
        if limit is not None:
            cursor = cursor.limit(limit)
        return await self._materialise([d async for d in cursor])

    @override
    async def get(self, thread_id: str) -> Thread | None:
        page = await self._page({"_id": thread_id}, None, 0)
        return page[0] if page else None

    @override
    async def list_page(self, *, limit: int | None, offset: int) -> list[Thread]:
        return await self._page({}, limit, offset)

    @staticmethod
    def _containing(field: str, *values: Mapping[str, Any]) -> Document:
        # Each key is a value inside $elemMatch, never a field name: dots and $ stay data.
        pairs = [pair for mapping in values for pair in lookup_array(mapping)]
        return {"$and": [{field: {"$elemMatch": pair}} for pair in pairs]}

    @override
    async def find_by_attributes(
        self, attributes: Mapping[str, Any], *, limit: int | None, offset: int
    ) -> list[Thread]:
        return await self._page(self._containing("attrs", attributes), limit, offset)

    @override
    async def find_by_source(
        self,
        name: str,
        properties: Mapping[str, Any],
        *,
        limit: int | None,
        offset: int,
    ) -> list[Thread]:
        query = self._containing("src", {"name": name}, properties)
        return await self._page(query, limit, offset)

    @override
    async def count(self) -> int:
        threads, _ = self._collections()
        return await threads.count_documents(_live(utc_now()))

    @override
    async def search(
        self, words: Sequence[str], *, limit: int, offset: int
    ) -> tuple[list[Thread], int]:
        threads, messages = self._collections()
        # Quoted, every word must occur (a bare list means any); the text index has language
        # "none", so words are neither stemmed nor dropped as stopwords.
        phrase = " ".join(f'"{word}"' for word in words)
        hits: dict[str, set[Any]] = {}
        # No projection: the mongoeco test server drops fields when one is combined with $text.
        cursor = messages.find({"$text": {"$search": phrase}})
        async for message in cursor:
            hits.setdefault(message["t"], set()).add(message["_id"])
        if not hits:
            return [], 0
        query = {"_id": {"$in": list(hits)}, **_live(utc_now())}
        cursor = threads.find(query, projection={"attrs": 0, "src": 0})
        cursor = cursor.sort([("updated_us", DESCENDING), ("_id", DESCENDING)])
        # Only committed messages count: the thread must reference the document that matched.
        matches = [
            document
            async for document in cursor
            if any(ref["o"] in hits[document["_id"]] for ref in document["refs"].values())
        ]
        return await self._materialise(matches[offset : offset + limit]), len(matches)
