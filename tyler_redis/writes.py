"""The write side of :class:`~tyler_redis.backend.RedisBackend`: save, append and delete, and
the index steps that keep the index keys in step with them (see :mod:`tyler_redis.backend`).

:class:`_Writes`, a mixin the backend inherits: on a standalone server a save or an append is
one script; otherwise an operation begins with step 1 (``_begin``), runs the thread script, and
queues its step 3 (``_settle``), which runs with the next index script (``_run_index``).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from redis import exceptions as redis_errors
from redis.exceptions import NoScriptError, RedisError
from typing_extensions import override

from tyler_core.backend import StorageBackend
from tyler_core.changes import ThreadChanges
from tyler_core.errors import ConcurrencyError, ThreadNotFoundError
from tyler_core.models import Message
from tyler_redis import layout, scripts
from tyler_redis.layout import Layout

__all__ = ["_Writes"]

logger = logging.getLogger("tyler_redis")

#: Errors after which a script may or may not have run.
_LOST = (redis_errors.ConnectionError, redis_errors.TimeoutError)
#: Errors of a pipelined script after which it is run again alone.
_RUN_AGAIN = (NoScriptError, *_LOST)


class _Writes(StorageBackend):
    """The write methods of :class:`~tyler_redis.backend.RedisBackend` (a mixin: the backend
    holds the client, the layout and the step-3 queue, and runs the scripts)."""

    _layout: Layout
    _one_step: bool
    _unsettled: list[tuple[list[str], list[Any]]]

    if TYPE_CHECKING:

        @property
        def client(self) -> Any: ...

        async def _run(
            self, script: scripts.Script, keys: Sequence[str], args: Sequence[Any]
        ) -> Any: ...

    # -- index steps ---------------------------------------------------------------------------

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
