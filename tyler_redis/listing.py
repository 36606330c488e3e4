"""Pages of the list index at the cost of the page.

A thread with no pending token and no expiry due has exactly one list member, the one its
header names (see :mod:`tyler_redis.scripts`). So a reader takes one consistent view of the
index (:data:`~tyler_redis.scripts.INDEX_LIST`): the members from rank ``offset`` on, plus every
member of the few threads that are not settled, with its rank. It checks only those threads
against their headers, and since it knows the rank of every member it rejects, it knows exactly
how far the page it wants lies from ``offset``. An empty pending hash costs nothing but the page.

Whatever writers are doing and wherever a crashed one stopped, a read counts every thread that
exists throughout it exactly once (threads created or deleted meanwhile may or may not count), so
pages never overlap or skip: at the place its header names, or, for a thread saved again between
the view and the check of every attempt, at the newest place it is known to have had.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from tyler_redis import layout, scripts
from tyler_redis.layout import Layout

__all__ = ["Check", "ListIndex", "Suspect", "View", "invalid_members", "live_count", "page_ids"]

logger = logging.getLogger("tyler_redis")

#: Views taken at most while a checked thread is saved again between the view and the check.
_ATTEMPTS = 3
#: The largest integer a Lua number (a double) holds exactly.
_LUA_EXACT = 2**53
#: Threads checked per pipeline, and per tidy script (each carries its members).
_CHECK_BATCH = 1000
_TIDY_BATCH = 200
_UPGRADE_BATCH = 1000

Run = Callable[[scripts.Script, Sequence[str], Sequence[Any]], Awaitable[Any]]
Pipelined = Callable[[Callable[[Any], None]], Awaitable[list[Any]]]


def _stamp_ms(member_or_token: bytes) -> int:
    """The index node's time (ms) in the token at the end of a member or token."""
    token = _token(member_or_token)
    return int(token[:10]) * 1000 + int(token[10:16]) // 1000


@dataclass(frozen=True, slots=True)
class Suspect:
    """A thread whose members must be checked: it has pending tokens, or it may expire."""

    thread_id: str
    tokens: list[bytes]
    due: bool
    ranks: dict[bytes, int]  # each of its list members -> its rank, highest first


@dataclass(frozen=True, slots=True)
class View:
    """One atomic reading of the list index."""

    now_ms: int  # the index node's clock when it was read
    size: int  # list members, valid or not
    window: list[bytes]  # members from rank `offset` on
    suspects: list[Suspect]

    @classmethod
    def parse(cls, reply: Any) -> View:
        """The view in an :data:`~tyler_redis.scripts.INDEX_LIST` reply."""
        _, now, size, window, raw = reply
        suspects = []
        for thread_id, tokens, due, ranked in raw:
            width = scripts.TOKEN_LENGTH
            suspects.append(
                Suspect(
                    thread_id=bytes(thread_id).decode(),
                    tokens=[tokens[i : i + width] for i in range(0, len(tokens), width)],
                    due=bool(due),
                    ranks=dict(zip(ranked[::2], (int(r) for r in ranked[1::2]), strict=True)),
                )
            )
        return cls(int(now), int(size), list(window), suspects)


@dataclass(frozen=True, slots=True)
class Check:
    """What a suspect's header said when the reader looked."""

    valid: bytes | None  # its member that counts (the one its header names), if any
    moved: bool  # the header names a member the view does not have: it was saved since
    pttl: int | None  # milliseconds until it expires, -1 for never, None when gone


def _token(member: bytes) -> bytes:
    """The token at the end of a member; it begins with its time, so byte order is age."""
    return member[-scripts.TOKEN_LENGTH :]


def _stand_in(suspect: Suspect) -> bytes:
    """The member that counts for a thread saved again between the view and the check: its
    header named one of its members in the view then, but which one is unknown. Counting
    exactly one keeps every other thread in place. A member whose operation finished (its token
    is not pending) was committed once: the newest of those, else the newest member."""
    pending = set(suspect.tokens)
    settled = [m for m in suspect.ranks if _token(m) not in pending]
    return max(settled or suspect.ranks, key=_token)


class ListIndex:
    """Reads of the list index: views, checks of suspects, tidying up, the format upgrade."""

    def __init__(self, keys: Layout, run: Run, pipelined: Pipelined) -> None:
        self._keys = keys
        self._run = run
        self._pipelined = pipelined

    async def read(
        self, offset: int, limit: int | None, *, grace: float, margin: float
    ) -> tuple[View, dict[str, Check]]:
        """A view with ``offset`` and room for ``limit`` valid members (``None``: all, 0: no
        window), and the checks of its suspects. Tidies what the checks found settled."""
        keys = self._keys
        index_keys = [
            keys.list_key,
            keys.members_key,
            keys.pending_key,
            keys.expiry_key,
            keys.format_key,
        ]
        # Lua's numbers are doubles: past 2**53 an offset or a limit would reach ZRANGE as
        # "9.2233720368548e+18". No index holds that many members, so such a page is all of them.
        if limit is not None and limit >= _LUA_EXACT:
            limit = None
        args = [min(offset, _LUA_EXACT), -1 if limit is None else limit, round(margin * 1000)]
        for attempt in range(1, _ATTEMPTS + 1):
            reply = await self._run(scripts.INDEX_LIST, index_keys, args)
            if reply[0] == b"legacy":
                await self._upgrade()
                reply = await self._run(scripts.INDEX_LIST, index_keys, args)
            view = View.parse(reply)
            checks = await self._check(view.suspects)
            if attempt < _ATTEMPTS and any(c.moved for c in checks.values()):
                continue  # a fresher view may settle it; the last one counts a stand-in
            await self._tidy(view, checks, round(grace * 1000))
            return view, checks
        raise AssertionError("unreachable")

    async def _check(self, suspects: list[Suspect]) -> dict[str, Check]:
        replies: list[Any] = []
        for start in range(0, len(suspects), _CHECK_BATCH):
            batch = suspects[start : start + _CHECK_BATCH]

            def build(pipe: Any, batch: list[Suspect] = batch) -> None:
                for suspect in batch:
                    header = self._keys.thread_keys(suspect.thread_id)[0]
                    pipe.hget(header, "lm")
                    pipe.pttl(header)

            replies += await self._pipelined(build)
        checks = {}
        for n, suspect in enumerate(suspects):
            named, pttl = replies[2 * n], int(replies[2 * n + 1])
            if named is None or pttl == -2:  # gone
                checks[suspect.thread_id] = Check(None, False, None)
            elif named in suspect.ranks:
                checks[suspect.thread_id] = Check(named, False, pttl)
            elif not suspect.ranks:  # stored since the view, and not in it
                checks[suspect.thread_id] = Check(None, False, pttl)
            else:
                checks[suspect.thread_id] = Check(_stand_in(suspect), True, pttl)
        return checks

    async def _tidy(self, view: View, checks: dict[str, Check], grace_ms: int) -> None:
        """Settle suspects whose leftovers are old, or whose operations are done (best effort:
        a read never fails for it)."""
        records: list[list[Any]] = []
        for suspect in view.suspects:
            check = checks[suspect.thread_id]
            if check.moved:
                continue
            invalid = [m for m in suspect.ranks if m != check.valid]
            old_invalid = [m for m in invalid if view.now_ms - _stamp_ms(m) >= grace_ms]
            old_tokens = [t for t in suspect.tokens if view.now_ms - _stamp_ms(t) >= grace_ms]
            # Once its old leftovers go, the thread is settled: its old tokens can go, so can the
            # token of the member its header names, and an expiry bound that came due can be
            # renewed from what its header said.
            settles = len(old_invalid) == len(invalid)
            committed = check.valid is not None and _token(check.valid) in suspect.tokens
            renew = suspect.due and not suspect.tokens
            if not old_invalid and not (settles and (old_tokens or committed or renew)):
                continue
            pttl = "" if check.pttl is None else str(check.pttl)
            records.append([suspect.thread_id, check.valid or b"", pttl, len(invalid), *invalid])
        keys = self._keys
        tidy_keys = [keys.list_key, keys.members_key, keys.pending_key, keys.expiry_key]
        for start in range(0, len(records), _TIDY_BATCH):
            args: list[Any] = [grace_ms, view.now_ms]
            for record in records[start : start + _TIDY_BATCH]:
                args += record
            try:
                await self._run(scripts.INDEX_TIDY, tidy_keys, args)
            except RedisError as exc:
                logger.warning("index tidying skipped: %s", type(exc).__name__)

    async def _upgrade(self) -> None:
        keys = self._keys
        upgrade_keys = [keys.list_key, keys.members_key, keys.pending_key, keys.format_key]
        cursor = b""
        while True:
            reply = await self._run(scripts.INDEX_UPGRADE, upgrade_keys, [cursor, _UPGRADE_BATCH])
            if reply[0] == b"done":
                return
            cursor = reply[1]


def invalid_members(view: View, checks: dict[str, Check]) -> set[bytes]:
    """The members of the view that count for nothing: those no header names."""
    return {
        member
        for suspect in view.suspects
        for member in suspect.ranks
        if member != checks[suspect.thread_id].valid
    }


def page_ids(view: View, checks: dict[str, Check], offset: int, limit: int | None) -> list[str]:
    """The ids of the page: skip ``offset`` valid members, take up to ``limit``."""
    invalid = invalid_members(view, checks)
    # The window starts at rank `offset`; every invalid member above it moves the page down.
    skip = sum(
        1
        for suspect in view.suspects
        for member, rank in suspect.ranks.items()
        if rank < offset and member in invalid
    )
    ids: list[str] = []
    for member in view.window:
        if member in invalid:
            continue
        if skip:
            skip -= 1
            continue
        ids.append(layout.id_of_list_member(member))
        if limit is not None and len(ids) == limit:
            break
    return ids


def live_count(view: View, checks: dict[str, Check]) -> int:
    """Threads in the list: one per member, less the members no header names."""
    return view.size - len(invalid_members(view, checks))
