"""``python -m benchmarks [--backend NAME ...] [--quick] [--output docs/performance.md]``.

Runs the workloads on each backend (all by default) against the store and its raw baseline and
writes the report with its plot. A backend whose server does not answer is reported as skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from benchmarks import concurrency, workloads
from benchmarks.baselines import Baseline, make_baseline
from benchmarks.config import (
    BACKENDS,
    FULL,
    MONGO_FULL,
    NAMESPACE,
    QUICK,
    BackendSpec,
    Sizes,
    answers,
    backend_url,
)
from benchmarks.report import markdown, plot_w1, table
from benchmarks.results import BackendResult
from tyler_core import ThreadStore
from tyler_core.urls import mask_url, mask_urls_in

WORKLOADS: dict[str, Callable[[workloads.Context], Awaitable[None]]] = {
    "w1": workloads.w1,
    "w2": workloads.w2,
    "w3": workloads.w3,
    "w4": workloads.w4,
    "w5": concurrency.w5,
    "memory": concurrency.memory,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--backend",
        action="append",
        choices=list(BACKENDS),
        help="a backend to run (repeatable; default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument(
        "--output", type=Path, default=Path("docs/performance.md"), help="the Markdown report"
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 1 if a backend was skipped or a workload failed (for CI)",
    )
    parser.add_argument(
        "--workload",
        action="append",
        choices=list(WORKLOADS),
        help="run only these workloads (repeatable; default: all; W4 needs W3's threads)",
    )
    return parser


def _failure(error: BaseException) -> str:
    text = mask_urls_in(f"{type(error).__name__}: {error}")
    return text.splitlines()[0][:300] if text else type(error).__name__


async def _open(spec: BackendSpec, url: str) -> tuple[ThreadStore, Baseline]:
    store = await ThreadStore.create(url, namespace=NAMESPACE, connect_timeout=10)
    try:
        baseline = make_baseline(spec.name, url)
        await baseline.open()
    except BaseException:
        await store.close()
        raise
    return store, baseline


async def run_backend(
    spec: BackendSpec, sizes: Sizes, chosen: Sequence[str], tmp: str, budget: float
) -> BackendResult:
    """Run the chosen workloads on one backend; never raises for a backend's failure."""
    url = backend_url(spec, tmp)
    result = BackendResult(spec.name, mask_url(url) or url, representative=spec.representative)
    if not answers(url, spec.port):
        result.status = f"no server answers for {result.url}"
        return result
    started = time.monotonic()
    try:
        store, baseline = await _open(spec, url)
    except Exception as error:  # a backend that cannot open is skipped
        result.status = f"could not open: {_failure(error)}"
        return result
    try:
        result.server = await baseline.server_version()
        await store.backend.purge()
        await baseline.reset()
        ctx = workloads.Context(store, baseline, sizes, result)
        for name in chosen:
            print(f"  {spec.name}: {name}", file=sys.stderr, flush=True)
            try:
                async with asyncio.timeout(budget):
                    await WORKLOADS[name](ctx)
            except Exception as error:  # report it and go on
                result.notes.append(f"{name.upper()} failed: {_failure(error)}")
                traceback.print_exc()
    finally:
        for step in (
            store.backend.purge,
            store.backend.drop,
            baseline.drop,
            baseline.close,
            store.close,
        ):
            try:
                await step()
            except Exception as error:  # clean up as much as possible
                result.notes.append(f"cleanup step {step.__name__} failed: {_failure(error)}")
    result.seconds = time.monotonic() - started
    return result


def _command(args: argparse.Namespace) -> str:
    parts = ["uv", "run", "python", "-m", "benchmarks"]
    for name in args.backend or []:
        parts += ["--backend", name]
    if args.quick:
        parts.append("--quick")
    for name in args.workload or []:
        parts += ["--workload", name]
    parts += ["--output", str(args.output)]
    return shlex.join(parts)


async def run(args: argparse.Namespace) -> list[BackendResult]:
    """Run the benchmark on every chosen backend, printing each table as it completes."""
    names = args.backend or list(BACKENDS)
    chosen = args.workload or list(WORKLOADS)
    if "w4" in chosen and "w3" not in chosen:
        chosen = ["w3", *chosen]
    chosen = [name for name in WORKLOADS if name in chosen]
    results = []
    with tempfile.TemporaryDirectory(prefix="tyler-bench-") as tmp:
        for name in names:
            spec = BACKENDS[name]
            sizes = QUICK if args.quick else (MONGO_FULL if name == "mongo" else FULL)
            if not spec.representative:
                # The pure-Python test server stalls under many concurrent writes.
                sizes = dataclasses.replace(sizes, batch=5)
            elif name == "sqlite":
                # Concurrent saves to a SQLite file wait in SQLite's busy handler, which sleeps:
                # one at a time populates about 2.5x faster (see the profiling notes).
                sizes = dataclasses.replace(sizes, batch=1)
            budget = 120.0 if args.quick else 1800.0
            print(f"benchmark: {name}", file=sys.stderr, flush=True)
            result = await run_backend(spec, sizes, chosen, tmp, budget)
            results.append(result)
            print(f"\n## {name}: {result.status}", flush=True)
            if result.status == "ok":
                print("\n".join(table(result)), flush=True)
                for note in result.notes:
                    print(f"- {note}", flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write the report and its plot; returns the exit status."""
    args = _parser().parse_args(argv)
    # asyncmy logs the server's notes ("Unknown table" for DROP TABLE IF EXISTS) as warnings.
    logging.getLogger("asyncmy").setLevel(logging.ERROR)
    before = os.getloadavg()[0]
    results = asyncio.run(run(args))
    load = (
        f"1-minute load average {before:.1f} at the start and {os.getloadavg()[0]:.1f} at the "
        f"end of the run, on {os.cpu_count()} cores shared with other work"
    )
    output: Path = args.output
    plot = output.with_name(f"{output.stem}-w1.png")
    has_plot = plot_w1(results, plot)
    output.parent.mkdir(parents=True, exist_ok=True)
    report = markdown(
        results,
        command=_command(args),
        plot=plot if has_plot else None,
        quick=args.quick,
        load=load,
    )
    output.write_text(report, encoding="utf-8")
    print(f"\nwrote {output}" + (f" and {plot}" if has_plot else ""), flush=True)
    problems = [
        r.name for r in results if r.status != "ok" or any(" failed: " in n for n in r.notes)
    ]
    if problems:
        print(f"skipped or failed: {', '.join(problems)}", file=sys.stderr, flush=True)
        return 1 if args.strict else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
