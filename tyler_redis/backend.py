"""RedisBackend: threads in Redis OSS / Valkey, standalone or cluster, plain commands only.

``redis://``, ``rediss://``, ``redis+cluster://`` and ``rediss+cluster://``. Everything
about one thread lives in keys that share a hash tag, and ``write``/``append``/``delete`` are one
Lua script each on that slot (see :mod:`tyler_redis.scripts`), so a thread is always stored whole
in one version. Listing and lookups use index keys in the namespace's own slot. On a standalone
server, where a script may touch keys of any slot, a save or an append is one script that also
moves the thread's index entries: one round trip, and nothing is ever pending. On a cluster the
index keys live in another slot, so an operation keeps them in step in three scripts:

1. it records a pending token for the thread and adds the entries of its new state,
2. it runs the thread script, which records that token's entries in the thread's header,
3. it removes the entries of the state it replaced, and its pending token. This step runs
   inside the backend's next index script (the next operation's step 1, or just before a
   listing or ``close``), so an operation costs two round trips.

(Deletes take the three steps on both.) A thread with no pending token therefore has exactly one
list entry, the one its header names, and a page of the list is read by rank: readers check
against the headers only the threads that have pending tokens or may expire
(:mod:`tyler_redis.listing`). Lookups check every hit against the thread's header, read after
the sets (a hit counts only if the thread's values then really match), so the lookup members a
save replaced may go later, with the next index script, on both kinds of server; a save that
changed only messages keeps them. So a crash between the steps leaves a pending token and
harmless extra entries, never a wrong answer; readers clear them once they are older than
:attr:`RedisBackend.stale_entry_grace` seconds (younger ones may belong to an operation in
flight): that is also how entries of expired threads go.

Every script can run twice without harm (a write whose reply was lost finds its own member in
the header and reports success), so the client retries a command whose connection dropped.
Keyword options the facade does not know (``client_name=...``, ``socket_timeout=...``,
``retry=...``) and the URL's own query parameters go to redis-py (see
:mod:`tyler_redis.connection`: a call waits up to ``pool_timeout`` for a free connection, on a
cluster too). Every key starts with ``<namespace>:``, so an ACL user needs the key pattern
``~<namespace>:*`` and the commands of the scripts (``EVALSHA``, ``EVAL``, ``SCRIPT LOAD``,
``SCAN``, ``UNLINK``, ``TIME``, ``PTTL``, ``SET``, hashes, sets and sorted sets).

The read methods are in :mod:`tyler_redis.reads`, the write methods and the index steps in
:mod:`tyler_redis.writes`: mixins that :class:`RedisBackend` inherits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Self

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisError
from typing_extensions import override

from tyler_core.backend import Capabilities
from tyler_core.settings import StoreOptions
from tyler_core.urls import mask_url
from tyler_redis import listing, scripts
from tyler_redis.connection import make_client, parse_url
from tyler_redis.layout import Layout
from tyler_redis.reads import _Reads
from tyler_redis.writes import _Writes

__all__ = ["RedisBackend"]

logger = logging.getLogger("tyler_redis")


class RedisBackend(_Reads, _Writes):
    """Threads in Redis: one hash-tagged group of keys per thread, global index keys.

    Differs from the contract only where it says so: ``search`` is not offered (it needs a
    module). ``ttl`` expires every key of a thread at the same instant; index entries of
    expired threads go lazily.
    """

    capabilities = Capabilities(search=False, ttl=True, shared_across_instances=True)

    #: Seconds after which readers remove an index entry that no thread names, and the pending
    #: token of an operation that never finished.
    stale_entry_grace: float = 60.0
    #: Seconds before its expiry from which a listing checks a thread with a ttl (room for the
    #: difference between the clocks of cluster nodes).
    expiry_margin: float = 5.0

    def __init__(self, url: str, *, cluster: bool, options: StoreOptions) -> None:
        self._url = url
        self._cluster = cluster
        self._options = options
        self._layout = Layout(options.namespace)
        #: Saves and appends as one script each, index entries included: possible on a
        #: standalone server only (on a cluster the index keys live in another slot).
        self._one_step = not cluster
        self._client: Any = None
        # Step 3 of finished operations, sent with this backend's next index command.
        self._unsettled: list[tuple[list[str], list[Any]]] = []
        self._list = listing.ListIndex(self._layout, self._run_index, self._pipelined)

    @classmethod
    @override
    def from_url(cls, url: str, options: StoreOptions) -> Self:
        driver_url, cluster = parse_url(url)
        return cls(driver_url, cluster=cluster, options=options)

    def _make_client(self) -> Any:
        return make_client(self._url, cluster=self._cluster, options=self._options)

    @override
    async def open(self) -> None:
        if self._client is not None:
            return
        client = self._make_client()
        try:
            if self._cluster:
                await client.initialize()
            await client.ping()
        except BaseException:
            await client.aclose()
            raise
        self._client = client
        logger.debug(
            "opened namespace %r on %s%s",
            self._options.namespace,
            mask_url(self._url),
            " (cluster)" if self._cluster else "",
        )

    @override
    async def close(self) -> None:
        if self._client is not None and self._unsettled:
            waiting, self._unsettled = self._unsettled, []
            try:
                await self._run(scripts.INDEX_SETTLE, *self._settle_call(waiting))
            except RedisError as exc:
                logger.warning("index entries left for readers to clear: %s", type(exc).__name__)
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    @property
    def client(self) -> Any:
        """The redis-py client (``Redis`` or ``RedisCluster``) once the store is open."""
        if self._client is None:
            raise RuntimeError("the Redis backend is not open")
        return self._client

    @override
    async def purge(self) -> None:
        client = self.client
        self._unsettled.clear()  # they would write into the namespace again
        scan: dict[str, Any] = {"count": 1000}
        if self._cluster:
            scan["target_nodes"] = RedisCluster.PRIMARIES
        batch: list[bytes] = []
        async for key in client.scan_iter(match=self._layout.pattern, **scan):
            batch.append(key)
            if len(batch) >= 500:
                await self._unlink(batch)
                batch = []
        await self._unlink(batch)
        logger.debug("purged namespace %r", self._options.namespace)

    @override
    async def storage_size(self) -> int:
        """The sum of ``MEMORY USAGE`` over the namespace's keys (a scan: for operators)."""
        scan: dict[str, Any] = {"count": 1000}
        if self._cluster:
            scan["target_nodes"] = RedisCluster.PRIMARIES
        keys = [key async for key in self.client.scan_iter(match=self._layout.pattern, **scan)]
        total = 0
        for start in range(0, len(keys), 500):
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys[start : start + 500]:
                    pipe.execute_command("MEMORY USAGE", key, "SAMPLES", "0")
                total += sum(int(size or 0) for size in await pipe.execute())
        return total

    async def _unlink(self, keys: list[bytes]) -> None:
        if not keys:
            return
        # One key per command: on a cluster the keys live in different slots.
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.execute_command("UNLINK", key)
            await pipe.execute()

    # -- scripts -------------------------------------------------------------------------------

    async def _run(self, script: scripts.Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await scripts.run(self.client, script, keys, args)

    async def _pipelined(self, build: Callable[[Any], None]) -> list[Any]:
        """Run commands in one pipeline; reload the scripts once if the server forgot them."""
        for attempt in (1, 2):
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    build(pipe)
                    return list(await pipe.execute())
            except NoScriptError:
                if attempt == 2:
                    raise
                logger.debug("the server had forgotten the scripts: loading them again")
                for script in scripts.SCRIPTS:
                    await self.client.script_load(script.source)
        raise AssertionError("unreachable")
