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

The read side is :mod:`tyler_mongo.reads`, the write side :mod:`tyler_mongo.writes` (mixins
:class:`MongoBackend` inherits); this module holds the URL, the client's lifecycle and the
indexes.

Notes: ``transactions=on`` on a standalone ``mongod`` fails on the first write (the server
refuses transactions). Expired threads vanish from every read at once; MongoDB's TTL monitor
deletes their documents within about a minute. A ``delete`` cut short between its two writes
leaves invisible message documents until the thread id is saved again.
"""

from __future__ import annotations

import logging
from typing import Any, Self
from urllib.parse import parse_qsl, unquote, urlsplit

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure, PyMongoError
from typing_extensions import override

from tyler_core.backend import Capabilities
from tyler_core.errors import StoreConnectionError
from tyler_core.settings import StoreOptions
from tyler_core.urls import mask_url, mask_urls_in
from tyler_mongo.reads import Document, _Reads
from tyler_mongo.writes import _Writes

__all__ = ["MongoBackend"]

logger = logging.getLogger("tyler_mongo")

_SCHEMES = ("mongodb", "mongodb+srv")
_DEFAULT_DATABASE = "tyler"
_SERVER_SELECTION_TIMEOUT_MS = 5000
_BAD_DATABASE_CHARACTERS = set('/\\. "$\x00')


def _has_key(url: str, name: str) -> bool:
    query = urlsplit(url).query
    return any(key.lower() == name.lower() for key, _ in parse_qsl(query))


class MongoBackend(_Reads, _Writes):
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
