"""The workloads W1-W4, each timed for the store and for its raw baseline (W5 and memory are
in :mod:`benchmarks.concurrency`).

Each function adds rows to a :class:`~benchmarks.results.BackendResult`. The store runs in the
``bench_<pid>`` namespace, the baseline in its own ``bench_raw_<pid>`` tables or keys on the
same server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import count
from typing import Any

from benchmarks.baselines import Baseline
from benchmarks.config import Sizes
from benchmarks.data import canonical, make_message, make_thread, raw_thread, thread_keys
from benchmarks.results import BackendResult, Row, interleaved
from tyler_core import Message, Thread, ThreadStore

__all__ = ["Context", "micros_now", "save_all", "w1", "w2", "w3", "w4"]

MS = 1000.0


class Context:
    """What every workload needs: the store, the baseline, the sizes and the result."""

    def __init__(
        self, store: ThreadStore, baseline: Baseline, sizes: Sizes, result: BackendResult
    ) -> None:
        self.store = store
        self.baseline = baseline
        self.sizes = sizes
        self.result = result
        self.sql_target = 2.5 if result.name == "sqlite" else 2.0

    def row(self, *args: Any, **kwargs: Any) -> None:
        """Add a :class:`Row`."""
        self.result.rows.append(Row(*args, **kwargs))


def micros_now() -> int:
    """Microseconds since the epoch, now."""
    return int(time.time() * 1_000_000)


async def save_all(
    store: ThreadStore, threads: Iterable[Thread], batch: int, deadline: float | None = None
) -> int:
    """Save threads through the store, ``batch`` at a time with ``asyncio.gather``; stop early
    once ``deadline`` (``time.monotonic()``) passes. Returns how many were saved."""
    saved = 0
    pending: list[Thread] = []

    async def flush() -> None:
        # Wait for every save of the batch before raising, so none is left running.
        outcomes = await asyncio.gather(*(store.save(t) for t in pending), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    for thread in threads:
        pending.append(thread)
        if len(pending) >= batch:
            await flush()
            saved += len(pending)
            pending = []
            if deadline is not None and time.monotonic() > deadline:
                return saved
    if pending:
        await flush()
        saved += len(pending)
    return saved


# -- W1: append one message and save ---------------------------------------------------------


async def w1(ctx: Context) -> None:
    """Grow one thread by one message and save, at each length; the baseline inserts the message
    and updates the thread row in one transaction. Then the same growth through
    ``store.append`` (informational: the targets are the save's)."""
    sizes = ctx.sizes
    appended = ctx.result.w1_append
    for length in sizes.w1_lengths:
        thread = make_thread(length, length, prefix="w1-")
        await ctx.store.save(thread)
        await ctx.baseline.insert_threads([raw_thread(thread)])
        extra = sizes.w1_ops + 1
        mine: Iterator[Message] = iter(
            [make_message(n) for n in range(length + 1, length + extra + 1)]
        )
        theirs = iter(
            [
                make_message(n, sequence=n).model_dump(mode="json")
                for n in range(length + 1, length + 2 * extra + 1)
            ]
        )
        version = count(2)

        async def ours(thread: Thread = thread, mine: Iterator[Message] = mine) -> None:
            thread.add_message(next(mine))
            await ctx.store.save(thread)

        async def baseline(
            thread_id: str = thread.id,
            theirs: Iterator[dict[str, Any]] = theirs,
            version: Iterator[int] = version,
        ) -> None:
            doc = next(theirs)
            message = (doc["id"], doc["sequence"], json.dumps(doc))
            await ctx.baseline.append_one(thread_id, message, micros_now(), next(version))

        mine_s, base_s = await interleaved(ours, baseline, sizes.w1_ops)
        ctx.result.w1[length] = (mine_s, base_s)
        top = length == max(sizes.w1_lengths)
        ctx.row(
            f"W1 append+save @{length:,} msgs",
            mine_s * MS,
            base_s * MS,
            "ms",
            target=f"<= {ctx.sql_target:g}x" if top else "",
            check="le" if top else "info",
            limit=ctx.sql_target if top else None,
        )

        # The same growth through store.append, which neither loads nor compares the thread.
        more: Iterator[Message] = iter(
            [make_message(n) for n in range(length + extra + 1, length + 2 * extra + 1)]
        )

        async def ours_append(thread_id: str = thread.id, more: Iterator[Message] = more) -> None:
            await ctx.store.append(thread_id, next(more))

        append_s, base_s = await interleaved(ours_append, baseline, sizes.w1_ops)
        appended[length] = append_s
        ctx.row(f"W1 append() @{length:,} msgs (info)", append_s * MS, base_s * MS, "ms")
    lengths = sorted(ctx.result.w1)
    if len(lengths) > 1:
        low, high = lengths[0], lengths[-1]
        ctx.row(
            f"W1 growth: ours @{high:,} vs ours @{low:,}",
            ctx.result.w1[high][0] * MS,
            ctx.result.w1[low][0] * MS,
            "ms",
            target="<= 1.5x",
            check="le",
            limit=1.5,
            reference=f"ours @{low:,}",
        )
        ctx.row(
            f"W1 append() growth: @{high:,} vs @{low:,} (info)",
            appended[high] * MS,
            appended[low] * MS,
            "ms",
            reference=f"append() @{low:,}",
        )


# -- W2: get a thread -------------------------------------------------------------------------


async def w2(ctx: Context) -> None:
    """Get a thread of each length; the baseline fetches the rows and decodes each message."""
    for length in ctx.sizes.w2_lengths:
        thread = make_thread(length, length, prefix="w2-")
        await ctx.store.save(thread)
        await ctx.baseline.insert_threads([raw_thread(thread)])

        async def ours(thread_id: str = thread.id, length: int = length) -> None:
            got = await ctx.store.get(thread_id)
            assert got is not None and len(got.messages) == length

        async def baseline(thread_id: str = thread.id, length: int = length) -> None:
            got = await ctx.baseline.get(thread_id)
            assert got is not None and len(got["messages"]) == length

        mine_s, base_s = await interleaved(ours, baseline, ctx.sizes.reads)
        top = length == max(ctx.sizes.w2_lengths)
        ctx.row(
            f"W2 get @{length:,} msgs",
            mine_s * MS,
            base_s * MS,
            "ms",
            target="<= 2x" if top else "",
            check="le" if top else "info",
            limit=2.0 if top else None,
        )


# -- W3: listing ------------------------------------------------------------------------------


@contextlib.contextmanager
def _statements_counted(store: ThreadStore) -> Iterator[Callable[[], int]]:
    """For SQL stores: within it, a function returning how many statements the engine has sent
    since it began, through SQLAlchemy or as page statements on the driver's own connection
    (:mod:`tyler_sql.driverfetch`)."""
    from sqlalchemy import event

    from tyler_sql.driverfetch import DriverFetch

    engine = store.engine
    assert engine is not None
    counter = [0]

    def bump(*_: Any) -> None:
        counter[0] += 1

    rows = DriverFetch.rows

    async def counted(fetch: DriverFetch, *args: Any) -> Any:
        counter[0] += 1
        return await rows(fetch, *args)

    event.listen(engine.sync_engine, "before_cursor_execute", bump)
    DriverFetch.rows = counted  # type: ignore[method-assign,assignment]
    try:
        yield lambda: counter[0]
    finally:
        DriverFetch.rows = rows  # type: ignore[method-assign]
        event.remove(engine.sync_engine, "before_cursor_execute", bump)


async def w3(ctx: Context) -> None:
    """``list_recent(20)`` and ``list(limit=20, offset=...)`` over many small threads."""
    sizes = ctx.sizes
    started = time.monotonic()
    threads = [make_thread(i, sizes.w3_messages) for i in range(sizes.w3_threads)]
    await ctx.baseline.insert_threads([raw_thread(t) for t in threads])
    await save_all(ctx.store, threads, sizes.batch)
    ctx.result.notes.append(
        f"Populated {sizes.w3_threads:,} threads of {sizes.w3_messages} messages "
        f"in {time.monotonic() - started:.0f} s (store: saves in batches of {sizes.batch})."
    )
    del threads
    offset = sizes.w3_offset
    cases = (
        ("W3 list_recent(20)", lambda: ctx.store.list_recent(20), lambda: ctx.baseline.page(20, 0)),
        (
            f"W3 list(20, offset={offset:,})",
            lambda: ctx.store.list(limit=20, offset=offset),
            lambda: ctx.baseline.page(20, offset),
        ),
    )
    for name, ours, baseline in cases:
        mine_s, base_s = await interleaved(ours, baseline, sizes.reads)
        ctx.row(
            f"{name} of {sizes.w3_threads:,}",
            mine_s * MS,
            base_s * MS,
            "ms",
            target="<= 2x",
            check="le",
            limit=2.0,
        )
    if ctx.store.engine is not None:
        used = []
        with _statements_counted(ctx.store) as statements:
            for limit in (1, 20, 100):
                before = statements()
                await ctx.store.list(limit=limit)
                used.append(f"{statements() - before} for limit={limit}")
        ctx.result.notes.append("SQL statements per `list()` call: " + ", ".join(used) + ".")


# -- W4: lookups ------------------------------------------------------------------------------


async def _lookups(ctx: Context, total: int, label: str) -> tuple[float, float]:
    match = total // 3
    attributes, source = thread_keys(match)
    wanted_id = f"t{match:07d}"

    async def ours_attr() -> None:
        found = await ctx.store.find_by_attributes({"customer": attributes["customer"]})
        assert [t.id for t in found] == [wanted_id], [t.id for t in found]

    async def base_attr() -> None:
        found = await ctx.baseline.find("a", "customer", canonical(attributes["customer"]))
        assert [d["id"] for d in found] == [wanted_id]

    async def ours_source() -> None:
        found = await ctx.store.find_by_source("slack", {"channel": source["channel"]})
        assert [t.id for t in found] == [wanted_id], [t.id for t in found]

    async def base_source() -> None:
        found = await ctx.baseline.find_source("slack", "channel", canonical(source["channel"]))
        assert [d["id"] for d in found] == [wanted_id]

    by_attr = await interleaved(ours_attr, base_attr, ctx.sizes.lookups)
    by_source = await interleaved(ours_source, base_source, ctx.sizes.lookups)
    for name, (mine_s, base_s) in (("find_by_attributes", by_attr), ("find_by_source", by_source)):
        ctx.row(f"W4 {name} 1 of {label}", mine_s * MS, base_s * MS, "ms", "<= 3x", "le", 3.0)
    return by_attr[0], by_source[0]


async def w4(ctx: Context) -> None:
    """Lookups with one match among W3's threads, then among many more (index, not scan)."""
    small, large = ctx.sizes.w4_threads
    first = await _lookups(ctx, small, f"{small:,}")
    extra = range(small, large)
    started = time.monotonic()
    for start in range(small, large, 5000):
        chunk = [make_thread(i, 0) for i in range(start, min(start + 5000, large))]
        await ctx.baseline.insert_threads([raw_thread(t) for t in chunk])
    deadline = time.monotonic() + ctx.sizes.populate_budget
    saved = await save_all(ctx.store, (make_thread(i, 0) for i in extra), ctx.sizes.batch, deadline)
    reached = small + saved
    elapsed = time.monotonic() - started
    label = f"{reached:,}"
    if reached < large:
        label += f" (budget: not {large:,})"
        ctx.result.notes.append(
            f"W4: saving {large - small:,} more threads through the store did not fit the "
            f"{ctx.sizes.populate_budget:.0f} s budget; the store held {reached:,} threads "
            f"(the baseline {large:,}) when the second lookup ran."
        )
    else:
        ctx.result.notes.append(f"W4: added {large - small:,} threads in {elapsed:.0f} s.")
    second = await _lookups(ctx, small, label)
    for name, before, after in zip(
        ("find_by_attributes", "find_by_source"), first, second, strict=True
    ):
        ctx.row(
            f"W4 growth: {name} @{label} vs @{small:,}",
            after * MS,
            before * MS,
            "ms",
            "<= 1.5x",
            "le",
            1.5,
            reference=f"ours @{small:,}",
        )
