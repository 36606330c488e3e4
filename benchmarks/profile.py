"""Profile the store's hot paths with cProfile: ``python -m benchmarks.profile [--backend
memory|sqlite|postgres|...] [--length 1000] [--top 25]``.

Profiles three loops on one backend: appending one message and saving a long thread (W1), getting
it (W2), and ``list_recent(20)`` over small threads (W3); prints the functions with the most own
time and the most cumulative time for each.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import tempfile
import time
from collections.abc import Awaitable, Callable

from benchmarks.config import BACKENDS, NAMESPACE, backend_url
from benchmarks.data import make_message, make_thread
from benchmarks.workloads import save_all
from tyler_core import ThreadStore


async def _profiled(name: str, loop: Callable[[], Awaitable[None]], runs: int, top: int) -> None:
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    for _ in range(runs):
        await loop()
    profile.disable()
    elapsed = (time.perf_counter() - started) / runs
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    print(f"\n===== {name}: {elapsed * 1000:.2f} ms per call under cProfile =====")
    print(out.getvalue())


async def run(backend: str, length: int, runs: int, top: int) -> None:
    """Profile the hot paths on ``backend``."""
    with tempfile.TemporaryDirectory(prefix="tyler-profile-") as tmp:
        store = await ThreadStore.create(backend_url(BACKENDS[backend], tmp), namespace=NAMESPACE)
        try:
            await store.backend.purge()
            thread = make_thread(1, length, prefix="prof-")
            await store.save(thread)
            more = iter([make_message(n) for n in range(length + 1, length + runs + 2)])

            async def append_and_save() -> None:
                thread.add_message(next(more))
                await store.save(thread)

            async def get() -> None:
                await store.get(thread.id)

            async def recent() -> None:
                await store.list_recent(20)

            await _profiled(f"W1 append+save @{length}", append_and_save, runs, top)
            await _profiled(f"W2 get @{length}", get, max(runs // 5, 3), top)
            await save_all(store, (make_thread(i, 5) for i in range(500)), 50)
            await _profiled("W3 list_recent(20)", recent, runs, top)
        finally:
            await store.backend.drop()  # the namespace is this process's own (bench_<pid>)
            await store.close()


def main() -> None:
    """Parse the arguments and profile."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    parser.add_argument("--backend", choices=list(BACKENDS), default="memory")
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    asyncio.run(run(args.backend, args.length, args.runs, args.top))


if __name__ == "__main__":
    main()
