"""MongoBackend: threads in MongoDB through PyMongo's native async client.

URLs: ``mongodb://[user:password@]host[:port][,host...]/[database][?options]`` and
``mongodb+srv://...``, passed to :class:`pymongo.AsyncMongoClient` unchanged. The database comes
from the path (default ``tyler``); the namespace is a collection prefix (``{ns}_threads``,
``{ns}_messages``). ``serverSelectionTimeoutMS`` defaults to 5000 unless the URL sets it. Extra
keyword options of :meth:`ThreadStore.create` go to the client (``event_listeners=[...]``,
``tls=True``...); ``pool_size`` becomes ``maxPoolSize`` and ``pool_timeout``
``waitQueueTimeoutMS``.

How it keeps rule 3: see :mod:`tyler_mongo.plans`. With ``transactions=on`` (or ``auto`` on a
replica set or sharded cluster) the steps of a write run in one multi-document transaction
(retried by the driver on transient errors); with ``off`` (or ``auto`` on a standalone server)
the thread document's update is the commit point and readers ignore what it does not reference.
The layout is the same in both modes (:mod:`tyler_mongo.documents`).

Notes: ``transactions=on`` on a standalone ``mongod`` fails on the first write (the server
refuses transactions). Expired threads vanish from every read at once; MongoDB's TTL monitor
deletes their documents within about a minute. A ``delete`` cut short between its two writes
leaves invisible message documents until the thread id is saved again.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Self, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError
from typing_extensions import override

from tyler_core.backend import Capabilities, StorageBackend
from tyler_core.changes import ThreadChanges
from tyler_core.errors import ConcurrencyError, StoreConnectionError
from tyler_core.models import Message, Thread, utc_now
from tyler_core.settings import StoreOptions
from tyler_core.urls import mask_url, mask_urls_in
from tyler_mongo.documents import lookup_array, read_message, read_thread
from tyler_mongo.plans import WritePlan, plan_append, plan_write

__all__ = ["MongoBackend"]

logger = logging.getLogger("tyler_mongo")

Document = dict[str, Any]
T = TypeVar("T")

_SCHEMES = ("mongodb", "mongodb+srv")
_DEFAULT_DATABASE = "tyler"
_SERVER_SELECTION_TIMEOUT_MS = 5000
_BAD_DATABASE_CHARACTERS = set('/\\. "$\x00')
# Optimistic writers retry when another writer committed first; concurrent appends to one
# thread each win in turn, so the bound is generous.
_ATTEMPTS = 200
# A reader retries when a writer deleted what it replaced between the reader's two queries.
_READ_ATTEMPTS = 20


class _Conflict(Exception):
    """Another writer committed between this attempt's read and its commit: try again."""


def _live(now: datetime) -> Document:
    # Threads without expiry (``expires_at`` null) and those not expired yet. (Not the shorter
    # ``{$not: {$lte: now}}``: the mongoeco test server does not match null with it.)
    return {"$or": [{"expires_at": None}, {"expires_at": {"$gt": now}}]}


def _warn_leftovers(count: int, thread_id: str) -> None:
    # Only an interrupted or failed writer leaves these: worth an operator's attention.
    logger.warning(
        "removed %d message documents left by an interrupted write of thread %s", count, thread_id
    )


def _has_key(url: str, name: str) -> bool:
    query = urlsplit(url).query
    return any(key.lower() == name.lower() for key, _ in parse_qsl(query))


class MongoBackend(StorageBackend):
    """Threads and messages in two MongoDB collections per namespace."""

    capabilities = Capabilities(search=True, ttl=True, shared_across_instances=True)

    def __init__(self, url: str, database: str, options: StoreOptions) -> None:
        self._url = url
        self._database_name = database
        self._options = options
        self._client: AsyncMongoClient[Document] | None = None
        self._threads: AsyncCollection[Document] | None = None
        self._messages: AsyncCollection[Document] | None = None
        self.transactions = False

    @classmethod
    @override
    def from_url(cls, url: str, options: StoreOptions) -> Self:
        parts = urlsplit(url)
        if parts.scheme.lower() not in _SCHEMES:
            raise ValueError("a MongoDB URL starts with mongodb:// or mongodb+srv://")
        if not parts.netloc.rpartition("@")[2]:
            raise ValueError("a MongoDB URL needs a host: mongodb://HOST[:PORT]/[DATABASE]")
        database = unquote(parts.path.lstrip("/")) or _DEFAULT_DATABASE
        if _BAD_DATABASE_CHARACTERS & set(database) or len(database) > 63:
            raise ValueError(f"{database!r} is not a usable MongoDB database name")
        return cls(url, database, options)

    @property
    def client(self) -> AsyncMongoClient[Document] | None:
        """The PyMongo client, once :meth:`open` has run (``None`` before and after)."""
        return self._client

    @property
    def database(self) -> AsyncDatabase[Document]:
        """The database the store uses (from the URL's path; ``tyler`` by default)."""
        if self._client is None:
            raise StoreConnectionError("the MongoDB store is not open")
        return self._client[self._database_name]

    def __repr__(self) -> str:
        return f"MongoBackend({mask_url(self._url)!r}, namespace={self._options.namespace!r})"

    # -- lifecycle -----------------------------------------------------------------------------

    def _client_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"tz_aware": True}
        if not _has_key(self._url, "serverSelectionTimeoutMS"):
            options["serverSelectionTimeoutMS"] = _SERVER_SELECTION_TIMEOUT_MS
        if not _has_key(self._url, "appName"):
            options["appname"] = "tyler-threadstore"
        if self._options.pool_size is not None:
            options["maxPoolSize"] = self._options.pool_size
        if self._options.pool_timeout is not None:
            options["waitQueueTimeoutMS"] = int(self._options.pool_timeout * 1000)
        options.update(self._options.extra)
        return options

    @override
    async def open(self) -> None:
        if self._client is not None:
            return
        client: AsyncMongoClient[Document] = AsyncMongoClient(self._url, **self._client_options())
        try:
            await client.admin.command("ping")
            hello = await client.admin.command("hello")
            database = client[self._database_name]
            namespace = self._options.namespace
            threads = database[f"{namespace}_threads"]
            messages = database[f"{namespace}_messages"]
            await _create_indexes(threads, messages)
        except PyMongoError as exc:
            await client.close()
            detail = mask_urls_in(f"{type(exc).__name__}: {exc}")
            raise StoreConnectionError(
                f"could not open MongoDB at {mask_url(self._url)}: {detail}"
            ) from exc
        except BaseException:
            await client.close()
            raise
        setting = self._options.transactions
        replicated = bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"
        self.transactions = setting == "on" or (setting == "auto" and replicated)
        self._client, self._threads, self._messages = client, threads, messages
        logger.debug(
            "opened namespace %r on %s (transactions %s: %s)",
            self._options.namespace,
            mask_url(self._url),
            setting,
            "on" if self.transactions else "off, commit points",
        )

    @override
    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    @override
    async def purge(self) -> None:
        threads, messages = self._collections()
        await threads.delete_many({})
        await messages.delete_many({})
        logger.debug("purged namespace %r", self._options.namespace)

    @override
    async def drop(self) -> None:
        """Drop the namespace's two collections (data and indexes). The store must be reopened
        (a new one) to be used again."""
        threads, messages = self._collections()
        await threads.drop()
        await messages.drop()
        logger.debug("dropped the collections of namespace %r", self._options.namespace)

    @override
    async def storage_size(self) -> int | None:
        """Data and index bytes of the two collections (``collStats``), or, on a server without
        it, the BSON size of every document (a scan, indexes not counted)."""
        total = 0
        for collection in self._collections():
            try:
                stats = await collection.database.command("collStats", collection.name)
                total += int(stats.get("size", 0)) + int(stats.get("totalIndexSize", 0))
            except OperationFailure:
                sizes = await collection.aggregate(
                    [{"$group": {"_id": None, "bytes": {"$sum": {"$bsonSize": "$$ROOT"}}}}]
                )
                async for row in sizes:
                    total += int(row["bytes"])
        return total

    def _collections(self) -> tuple[AsyncCollection[Document], AsyncCollection[Document]]:
        if self._threads is None or self._messages is None or self._client is None:
            raise StoreConnectionError("the MongoDB store is not open")
        return self._threads, self._messages

    # -- writes --------------------------------------------------------------------------------

    async def _in_transaction(self, step: Callable[[AsyncClientSession | None], Awaitable[T]]) -> T:
        """Run ``step`` once: in a transaction (retried by the driver on transient errors) or
        without one."""
        if not self.transactions:
            return await step(None)
        assert self._client is not None
        async with self._client.start_session() as session:
            return await session.with_transaction(step)

    async def _retrying(self, step: Callable[[AsyncClientSession | None], Awaitable[T]]) -> T:
        for attempt in range(_ATTEMPTS):
            try:
                return await self._in_transaction(step)
            except _Conflict:
                if logger.isEnabledFor(logging.DEBUG):
                    logger.debug("another writer committed first: retry %d", attempt + 1)
                # Jittered back-off, so that contending writers do not retry in lockstep.
                await asyncio.sleep(random.uniform(0, 0.002 * min(attempt + 1, 25)))
        logger.warning("gave up a write after %d attempts: too many concurrent writers", _ATTEMPTS)
        raise ConcurrencyError("gave up after too many concurrent writes to the same thread")

    @override
    async def write(self, changes: ThreadChanges) -> None:
        threads, _ = self._collections()
        # A save that creates the thread, or writes it unchecked (copies, imports), first
        # assumes that none is stored and reads nothing: inserting the thread document is the
        # check. If one is stored after all, the insert fails and the next attempt reads it.
        assume_absent = not changes.expected_version

        async def attempt(session: AsyncClientSession | None) -> None:
            nonlocal assume_absent
            now = utc_now()
            document = None
            if not assume_absent:
                document = await threads.find_one({"_id": changes.thread.id}, session=session)
            assume_absent = False
            await self._execute(plan_write(changes, document, now), session)

        await self._retrying(attempt)

    @override
    async def append(
        self,
        thread_id: str,
        messages: Sequence[Message],
        *,
        updated_at: datetime,
    ) -> list[Message]:
        threads, _ = self._collections()

        async def attempt(session: AsyncClientSession | None) -> list[Message]:
            now = utc_now()
            document = await threads.find_one({"_id": thread_id}, session=session)
            plan, added = plan_append(thread_id, messages, document, updated_at=updated_at, now=now)
            await self._execute(plan, session)
            return added

        added = await self._retrying(attempt)
        return [message.model_copy(deep=True) for message in added]

    async def _execute(self, plan: WritePlan, session: AsyncClientSession | None) -> None:
        """Carry out ``plan``: messages first, then the commit, then the clean-up."""
        _, messages = self._collections()
        if plan.expiry_update is not None:
            await messages.update_many(
                {"t": plan.thread_id, "e": {"$lt": plan.epoch}},
                plan.expiry_update,
                session=session,
            )
        if plan.inserts:
            await messages.insert_many(plan.inserts, session=session)
        try:
            committed = await self._commit(plan, session)
        except DuplicateKeyError:
            committed = False  # the thread was created meanwhile
        if not committed:
            if session is None and plan.inserts:
                await messages.delete_many({"_id": {"$in": plan.inserted_ids}})
            raise _Conflict
        if plan.whole:
            await self._clean_up_after_replace(plan, session)
            return
        if plan.replaced:
            await messages.delete_many({"_id": {"$in": plan.replaced}}, session=session)
        await self._clean_leftovers(plan, session)

    async def _commit(self, plan: WritePlan, session: AsyncClientSession | None) -> bool:
        """The commit point: one atomic write of the thread document. ``False`` if another
        writer committed since ``plan`` was read."""
        threads, _ = self._collections()
        if plan.read_epoch is None:
            await threads.insert_one(plan.thread_document(), session=session)
            return True
        update: Document = {"$set": plan.thread_set}
        if plan.thread_unset:
            update["$unset"] = plan.thread_unset
        if plan.thread_inc:
            update["$inc"] = plan.thread_inc
        # ``incarnation: None`` also matches a document written before tokens existed.
        query = {
            "_id": plan.thread_id,
            "epoch": plan.read_epoch,
            "incarnation": plan.read_incarnation,
        }
        result = await threads.update_one(query, update, session=session)
        return result.matched_count == 1

    async def _clean_up_after_replace(
        self, plan: WritePlan, session: AsyncClientSession | None
    ) -> None:
        """After a commit that replaced every message: delete every older message document.

        The commit references only documents of this writer's epoch, and later writers only
        those and their own, so no document of a lower epoch can be referenced any more: the
        replaced documents and any leftovers go in one step, without counting first.
        """
        _, messages = self._collections()
        result = await messages.delete_many(
            {"t": plan.thread_id, "e": {"$lt": plan.epoch}}, session=session
        )
        leftovers = result.deleted_count - len(plan.replaced)
        if leftovers > 0:
            _warn_leftovers(leftovers, plan.thread_id)

    async def _clean_leftovers(self, plan: WritePlan, session: AsyncClientSession | None) -> None:
        """Delete message documents of writers that can no longer commit (an interrupted or
        failed save, a delete cut short), if there are any: counting is cheap, scanning not."""
        _, messages = self._collections()
        stored = await messages.count_documents({"t": plan.thread_id}, session=session)
        if stored <= len(plan.refs):
            return
        result = await messages.delete_many(
            {
                "t": plan.thread_id,
                "e": {"$lt": plan.epoch},
                "_id": {"$nin": [ref["o"] for ref in plan.refs.values()]},
            },
            session=session,
        )
        if result.deleted_count:
            _warn_leftovers(result.deleted_count, plan.thread_id)

    @override
    async def delete(self, thread_id: str) -> bool:
        threads, messages = self._collections()

        async def attempt(session: AsyncClientSession | None) -> bool:
            document = await threads.find_one_and_delete(
                {"_id": thread_id, **_live(utc_now())}, session=session
            )
            if document is None:
                return False
            # Writers that started later have a higher epoch: their documents stay.
            await messages.delete_many(
                {"t": thread_id, "e": {"$lte": document["epoch"]}}, session=session
            )
            return True

        return await self._in_transaction(attempt)

    # -- reads ---------------------------------------------------------------------------------

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
        cursor = threads.find({**query, **_live(utc_now())}, projection={"attrs": 0, "src": 0})
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


async def _create_indexes(
    threads: AsyncCollection[Document], messages: AsyncCollection[Document]
) -> None:
    """Create the indexes (idempotent): ordering, lookups, expiry, messages by thread, search."""
    await threads.create_indexes(
        [
            IndexModel([("updated_us", DESCENDING), ("_id", DESCENDING)], name="order"),
            IndexModel([("attrs.k", ASCENDING), ("attrs.v", ASCENDING)], name="attributes"),
            IndexModel([("src.k", ASCENDING), ("src.v", ASCENDING)], name="source"),
            IndexModel([("expires_at", ASCENDING)], name="expiry", expireAfterSeconds=0),
        ]
    )
    # No unique index on (thread, message id) or (thread, sequence): a save that has not
    # committed yet stores new versions of messages beside the committed ones. Uniqueness holds
    # by construction instead: ``refs`` is keyed by message id, and sequences are checked by the
    # facade or allocated by ``append`` under the same epoch guard as every commit.
    # Every query of message documents selects a thread's (``t``; the epoch, if any, is a
    # residual filter) and sequences are ordered client-side, so one field is enough; the
    # mongoeco test server, unlike MongoDB, uses single-field indexes only. (Namespaces created
    # before keep their former ``thread_sequence`` index on (t, s, e) as well: it can be
    # dropped.)
    await messages.create_indexes(
        [
            IndexModel([("t", ASCENDING)], name="thread"),
            IndexModel([("text", "text")], name="text", default_language="none"),
            IndexModel([("expires_at", ASCENDING)], name="expiry", expireAfterSeconds=0),
        ]
    )
