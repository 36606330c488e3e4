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
(:mod:`tyler_redis.listing`). Lookups check every hit (a hit counts only if the thread's header
names it and the thread's values really match), so the lookup members a save replaced may go
later, with the next index script, on both kinds of server; a save that changed only messages
keeps them. So a crash between the steps leaves a pending token and harmless extra entries,
never a wrong answer; readers clear them once they are older than
:attr:`RedisBackend.stale_entry_grace` seconds (younger ones may belong to an operation in
flight): that is also how entries of expired threads go.

Every script can run twice without harm (a write whose reply was lost finds its own member in
the header and reports success), so the client retries a command whose connection dropped.
Keyword options the facade does not know (``client_name=...``, ``socket_timeout=...``,
``retry=...``) and the URL's own query parameters go to redis-py. With ``pool_size`` the
standalone client uses a blocking pool of ``pool_size + max_overflow`` connections that waits
``pool_timeout``. Every key starts with ``<namespace>:``, so an ACL user needs the key pattern
``~<namespace>:*`` and the commands of the scripts (``EVALSHA``, ``EVAL``, ``SCRIPT LOAD``,
``SCAN``, ``UNLINK``, ``TIME``, ``PTTL``, ``SET``, hashes, sets and sorted sets).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import NoScriptError, RedisError
from typing_extensions import override

from tyler_core.backend import Capabilities, StorageBackend
from tyler_core.changes import ThreadChanges
from tyler_core.errors import ConcurrencyError, ThreadNotFoundError
from tyler_core.jsonvalues import json_equal
from tyler_core.models import Message, Thread
from tyler_core.settings import StoreOptions
from tyler_core.urls import mask_url
from tyler_redis import layout, listing, scripts
from tyler_redis.layout import Layout

__all__ = ["RedisBackend"]

logger = logging.getLogger("tyler_redis")

_SCHEMES = {"redis": False, "rediss": False, "redis+cluster": True, "rediss+cluster": True}
_BATCH = 256
#: Errors after which a script may or may not have run.
_LOST = (redis_errors.ConnectionError, redis_errors.TimeoutError)
#: Errors of a pipelined script after which it is run again alone.
_RUN_AGAIN = (NoScriptError, *_LOST)


def _contains(document: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> bool:
    if document is None:
        return False
    return all(key in document and json_equal(document[key], v) for key, v in wanted.items())


class RedisBackend(StorageBackend):
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
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES:
            raise ValueError(f"a Redis URL starts with one of {', '.join(_SCHEMES)}")
        if not parts.hostname:
            raise ValueError("a Redis URL needs a host, e.g. redis://localhost:6379/0")
        cluster = _SCHEMES[scheme]
        if cluster and parts.path not in ("", "/", "/0"):
            raise ValueError("a Redis Cluster has only database 0")
        # redis-py knows redis:// and rediss:// only; the cluster client is chosen here.
        driver_url = urlunsplit(parts._replace(scheme=scheme.removesuffix("+cluster")))
        return cls(driver_url, cluster=cluster, options=options)

    def _make_client(self) -> Any:
        """The redis-py client. Keyword options the facade does not know go to redis-py."""
        options = self._options
        kwargs: dict[str, Any] = {
            "socket_connect_timeout": options.connect_timeout,
            # Every script is safe to run again (a write whose reply was lost finds its own
            # token and reports success), so a dropped connection is retried, not reported.
            "retry": Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.5), 3),
        }
        if options.pool_size is not None:
            kwargs["max_connections"] = options.pool_size + (options.max_overflow or 0)
        kwargs.update(options.extra)
        kwargs["decode_responses"] = False  # members and ids are bytes; decoded here
        if self._cluster:
            return RedisCluster.from_url(self._url, **kwargs)
        # Always a blocking pool: a call waits for a free connection (up to pool_timeout)
        # instead of failing with MaxConnectionsError once more tasks than connections run at
        # once, as the SQL pools do. Its default size is redis-py's (50) unless pool_size says.
        if options.pool_timeout is not None:
            kwargs.setdefault("timeout", options.pool_timeout)
        return Redis.from_pool(BlockingConnectionPool.from_url(self._url, **kwargs))

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

    def _settle_call(
        self, waiting: list[tuple[list[str], list[Any]]]
    ) -> tuple[list[str], list[Any]]:
        """The keys and arguments of :data:`~tyler_redis.scripts.INDEX_SETTLE` for records."""
        index = self._layout
        keys = [index.list_key, index.members_key, index.pending_key, index.expiry_key]
        args: list[Any] = [len(waiting)]
        for record_keys, record in waiting:
            keys += record_keys
            args += record
        return keys, args

    async def _begin(self, thread_id: str, list_prefix: bytes, lookup_keys: list[str]) -> bytes:
        """Step 1 of an operation: its pending token, and its list member (unless
        ``list_prefix`` is empty: a delete) and lookup members, in one script with step 3 of
        the operations that finished before. Returns the token."""
        waiting, self._unsettled = self._unsettled, []
        settle_keys, settle_args = self._settle_call(waiting)
        # The same four index keys first, then the format mark, then the lookup sets.
        keys = [*settle_keys[:4], self._layout.format_key, *lookup_keys, *settle_keys[4:]]
        args: list[Any] = [thread_id, list_prefix[:20], layout.lookup_prefix(thread_id)]
        args += [secrets.token_hex(6), len(lookup_keys), *settle_args]
        try:
            token = await self._run(scripts.INDEX_ADD, keys, args)
        except _LOST:
            self._unsettled[:0] = waiting  # they may not have run; they can run twice
            raise
        return bytes(token)

    def _settle(
        self,
        thread_id: str,
        token: bytes,
        list_member: bytes,
        lookup_member: bytes,
        lookup_keys: list[str],
        *,
        ttl_ms: bytes | str = b"",
        unsure: bool = False,
    ) -> None:
        """Step 3: remove the entries of the state that is no longer stored, and the pending
        token (kept while the thread has entries if the outcome is ``unsure``: a script that
        failed may have been applied by an earlier attempt whose reply was lost).

        It runs inside this backend's next index script (the next operation's step 1), or just
        before it (a listing, ``close``), so an operation costs two round trips and two
        commands. Until then, or if it never runs (best effort: a process that dies), the
        pending token only makes readers check the thread against its header, and they clear
        it themselves."""
        record = [thread_id, token, list_member, lookup_member, ttl_ms, "1" if unsure else "0"]
        self._unsettled.append((lookup_keys, [*record, len(lookup_keys)]))

    async def _run_index(
        self, script: scripts.Script, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """Run an index script after the waiting step-3 records, in one round trip (they all
        touch the namespace's slot)."""
        waiting, self._unsettled = self._unsettled, []
        if not waiting:
            return await self._run(script, keys, args)
        settle_keys, settle_args = self._settle_call(waiting)
        settle = scripts.INDEX_SETTLE
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.execute_command(
                "EVALSHA", settle.sha, len(settle_keys), *settle_keys, *settle_args
            )
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            settled, reply = await pipe.execute(raise_on_error=False)
        # A pipeline hands back the errors of its commands instead of retrying them (the cluster
        # client's does so for dropped connections too): run such a script again alone, which
        # retries and loads a script the server had forgotten. Every index script can run twice.
        try:
            if isinstance(settled, _RUN_AGAIN):
                await self._run(settle, settle_keys, settle_args)
            elif isinstance(settled, Exception):
                raise settled
        except RedisError as exc:
            logger.warning("index entries left for readers to clear: %s", type(exc).__name__)
        if isinstance(reply, _RUN_AGAIN):
            return await self._run(script, keys, args)
        if isinstance(reply, Exception):
            raise reply
        return reply

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

    # -- writes --------------------------------------------------------------------------------

    @override
    async def write(self, changes: ThreadChanges) -> None:
        thread = changes.thread
        # A save that changed only messages of the thread it checks (version and incarnation)
        # keeps the stored header JSON and lookup members: no encoding, no lookup set touched.
        keep = (
            not changes.thread_changed
            and not changes.full
            and bool(changes.expected_version)
            and changes.expected_incarnation is not None
        )
        if keep:
            suffixes: list[str] = []
            lookups, header = "keep", ""
        else:
            suffixes = self._layout.lookup_suffixes(thread.attributes, thread.source)
            # One script can compare the stored lookup sets with these; two steps cannot.
            lookups = "same" if self._one_step else "new"
            header = layout.encode_header(thread)
        lookup_keys = [self._layout.key_of(s) for s in suffixes]
        list_prefix = layout.list_prefix(thread.id, changes.updated_at)
        ttl_ms = "" if changes.ttl is None else str(max(1, round(changes.ttl * 1000)))

        upserts = changes.messages if changes.full else (*changes.added, *changes.changed)
        removed = () if changes.full else changes.removed
        expected = changes.expected_version
        expected_token = changes.expected_incarnation
        args: list[Any] = [
            "" if expected is None else str(expected),
            "" if not expected or expected_token is None else "=" + expected_token,
            changes.incarnation,
            layout.encode_suffixes(suffixes),
            str(changes.version),
            changes.updated_at.isoformat(),
            header,
            ttl_ms,
            "1" if changes.full else "0",
            lookups,
            len(removed),
            len(upserts),
            *removed,
        ]
        args += [layout.encode_entry(message) for message in upserts]
        if self._one_step:
            reply = await self._write_at_once(thread.id, list_prefix, lookup_keys, args)
        else:
            reply = await self._write_in_steps(thread.id, list_prefix, lookup_keys, args, ttl_ms)
        if reply[0] == b"ok":
            return
        if reply[0] == b"other":
            raise ConcurrencyError(
                f"thread {thread.id!r} was deleted and stored again since it was loaded: "
                "reload it and save again"
            )
        raise ConcurrencyError(
            f"thread {thread.id!r} is at version {reply[1].decode()}, "
            f"not {expected}: reload it and save again"
        )

    async def _write_in_steps(
        self,
        thread_id: str,
        list_prefix: bytes,
        lookup_keys: list[str],
        args: list[Any],
        ttl_ms: str,
    ) -> Any:
        """A save on a cluster: index entries, thread script, and step 3 queued."""
        token = await self._begin(thread_id, list_prefix, lookup_keys)
        list_member = list_prefix + token
        lookup_member = layout.lookup_prefix(thread_id) + token
        # If this fails, the write may or may not have happened: the pending token stays, so
        # readers check the thread against its header until they clear it.
        keys = self._layout.thread_keys(thread_id)
        reply = await self._run(scripts.WRITE, keys, [list_member, lookup_member, *args])
        if reply[0] != b"ok":
            # Not committed now, so our entries can go; but an earlier attempt whose reply was
            # lost may have been, and replaced entries nobody removed: unsure.
            self._settle(thread_id, token, list_member, lookup_member, lookup_keys, unsure=True)
            return reply
        old_list, old_lookup, old_suffixes = reply[1], reply[2], reply[3]
        old_keys = [self._layout.key_of(s) for s in layout.decode_suffixes(old_suffixes)]
        self._settle(thread_id, token, old_list, old_lookup, old_keys, ttl_ms=ttl_ms)
        return reply

    def _at_once_call(
        self, thread_id: str, extra_keys: list[str], head: list[Any], args: list[Any]
    ) -> tuple[list[str], list[Any], list[tuple[list[str], list[Any]]]]:
        """Keys and arguments of a one-step script, with the waiting step-3 records."""
        waiting, self._unsettled = self._unsettled, []
        settle_keys, settle_args = self._settle_call(waiting)
        keys = [*settle_keys[:4], self._layout.format_key, *self._layout.thread_keys(thread_id)]
        keys += extra_keys
        keys += settle_keys[4:]
        return keys, [*head, *args, *settle_args], waiting

    async def _run_at_once(
        self,
        script: scripts.Script,
        call: tuple[list[str], list[Any], list[tuple[list[str], list[Any]]]],
    ) -> Any:
        keys, args, waiting = call
        try:
            return await self._run(script, keys, args)
        except _LOST:
            self._unsettled[:0] = waiting  # they may not have run; they can run twice
            raise

    async def _write_at_once(
        self, thread_id: str, list_prefix: bytes, lookup_keys: list[str], args: list[Any]
    ) -> Any:
        """A save on a standalone server: one script, one round trip."""
        lookup_prefix = layout.lookup_prefix(thread_id)
        head = [list_prefix, lookup_prefix, secrets.token_hex(6), len(lookup_keys), thread_id]
        call = self._at_once_call(thread_id, lookup_keys, head, args)
        reply = await self._run_at_once(scripts.WRITE_AND_INDEX, call)
        if reply[0] == b"ok" and reply[2]:
            # The replaced lookup members: removed with the next index script.
            old_keys = [self._layout.key_of(s) for s in layout.decode_suffixes(reply[3])]
            self._settle(thread_id, b"", b"", reply[2], old_keys)
        return reply

    @override
    async def append(
        self,
        thread_id: str,
        messages: Sequence[Message],
        *,
        updated_at: datetime,
    ) -> list[Message]:
        list_prefix = layout.list_prefix(thread_id, updated_at)
        args: list[Any] = [updated_at.isoformat(), len(messages)]
        args += [f"{m.id}\0{layout.encode_message(m)}" for m in messages]
        if not self._one_step:
            token = await self._begin(thread_id, list_prefix, [])
            list_member = list_prefix + token
            keys = self._layout.thread_keys(thread_id)
            reply = await self._run(scripts.APPEND, keys, [list_member, *args])
            if reply[0] == b"ok":
                self._settle(thread_id, token, reply[2], b"", [], ttl_ms=reply[3])
            else:
                self._settle(thread_id, token, list_member, b"", [], unsure=True)
        else:
            head = [list_prefix, secrets.token_hex(6), thread_id]
            call = self._at_once_call(thread_id, [], head, args)
            reply = await self._run_at_once(scripts.APPEND_AND_INDEX, call)
        status = reply[0]
        if status != b"ok":
            if status == b"missing":
                raise ThreadNotFoundError(f"no thread {thread_id!r}")
            raise ValueError(f"thread {thread_id!r} already has a message {reply[1].decode()!r}")
        first = int(reply[1])
        added = []
        for offset, message in enumerate(messages):
            copy = message.model_copy(deep=True)
            copy.sequence = first + offset
            added.append(copy)
        return added

    @override
    async def delete(self, thread_id: str) -> bool:
        # Pending first: between the delete and the removal of its entries, readers check it.
        token = await self._begin(thread_id, b"", [])
        reply = await self._run(scripts.DELETE, self._layout.thread_keys(thread_id), [])
        if reply is None:
            # Nothing to delete now; an earlier attempt whose reply was lost may have deleted it.
            self._settle(thread_id, token, b"", b"", [], unsure=True)
            return False
        old_list, old_lookup, old_suffixes = reply
        old_keys = [self._layout.key_of(s) for s in layout.decode_suffixes(old_suffixes)]
        self._settle(thread_id, token, old_list, old_lookup, old_keys)
        return True

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
        stale = []
        found: dict[str, Thread] = {}
        for member, thread_id in by_member.items():
            header = headers[thread_id]
            if header.get(b"am") != member:
                stale.append(member)
                continue
            thread = layout.decode_header(header)
            if matches(thread):
                found[thread_id] = thread
        await self._sweep(keys, stale)
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
