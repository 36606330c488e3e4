"""W5 (concurrent saves and appends) and the memory workload."""

from __future__ import annotations

import asyncio
import gc
import json
import time
import tracemalloc
from collections.abc import Callable
from itertools import count
from typing import Any

from benchmarks.data import make_message, make_thread, raw_thread
from benchmarks.workloads import Context, micros_now
from tyler_core import Message

__all__ = ["memory", "w5"]


# -- W5: concurrency --------------------------------------------------------------------------


async def _run_tasks(tasks: int, work: Callable[[], Any]) -> float:
    started = time.perf_counter()
    await asyncio.gather(*(work() for _ in range(tasks)))
    return time.perf_counter() - started


async def w5(ctx: Context) -> None:
    """Concurrent saves of new threads (throughput), then concurrent appends to one thread
    (throughput and lost messages)."""
    sizes = ctx.sizes
    mine_threads = iter([make_thread(i, 2, prefix="w5-") for i in range(sizes.w5_threads)])
    their_threads = iter(
        [raw_thread(make_thread(i, 2, prefix="w5-")) for i in range(sizes.w5_threads)]
    )

    async def ours() -> None:
        for thread in mine_threads:
            await ctx.store.save(thread)

    async def baseline() -> None:
        for thread in their_threads:
            await ctx.baseline.save_new(thread)

    mine_s = await _run_tasks(sizes.w5_save_tasks, ours)
    base_s = await _run_tasks(sizes.w5_save_tasks, baseline)
    ctx.row(
        f"W5 {sizes.w5_save_tasks} tasks save {sizes.w5_threads:,} new threads",
        sizes.w5_threads / mine_s,
        sizes.w5_threads / base_s,
        "threads/s",
        ">= 0.5x",
        "ge",
        0.5,
    )

    target = make_thread(1, 1, prefix="w5-append-")
    await ctx.store.save(target)
    await ctx.baseline.insert_threads([raw_thread(target)])
    ids = count(1)

    async def ours_append() -> None:
        for _ in range(sizes.w5_appends):
            await ctx.store.append(target.id, make_message(1000 + next(ids)))

    async def base_append() -> None:
        for _ in range(sizes.w5_appends):
            message = make_message(1000 + next(ids)).model_dump(mode="json")
            await ctx.baseline.append_locked(target.id, message, micros_now())

    expected = 1 + sizes.w5_append_tasks * sizes.w5_appends
    mine_s = await _run_tasks(sizes.w5_append_tasks, ours_append)
    base_s = await _run_tasks(sizes.w5_append_tasks, base_append)
    got = await ctx.store.get(target.id)
    their = await ctx.baseline.get(target.id)
    mine_lost = expected - (len({m.sequence for m in got.messages}) if got else 0)
    their_lost = expected - (len({m["sequence"] for m in their["messages"]}) if their else 0)
    total = sizes.w5_append_tasks * sizes.w5_appends
    ctx.row(
        f"W5 {sizes.w5_append_tasks} tasks x {sizes.w5_appends} appends",
        total / mine_s,
        total / base_s,
        "appends/s",
    )
    ctx.row("W5 lost appends", float(mine_lost), float(their_lost), "messages", "0", "zero")


# -- memory -----------------------------------------------------------------------------------


async def memory(ctx: Context) -> None:
    """Peak allocation while loading a long thread, against building its ``Message`` objects
    from their JSON in plain Python."""
    size = ctx.sizes.memory_messages
    thread = make_thread(size, size, prefix="mem-")
    await ctx.store.save(thread)
    documents = [json.dumps(m.model_dump(mode="json")) for m in thread.messages]
    del thread
    gc.collect()
    tracemalloc.start()
    loaded = await ctx.store.get(f"mem-{size:07d}")
    mine_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert loaded is not None and len(loaded.messages) == size
    del loaded
    gc.collect()
    tracemalloc.start()
    built = [Message.model_validate(json.loads(d)) for d in documents]
    base_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del built
    ctx.row(
        f"memory: peak loading {size:,} msgs",
        mine_peak / 2**20,
        base_peak / 2**20,
        "MiB",
        "<= 1.5x",
        "le",
        1.5,
        reference="Messages from JSON",
    )
