"""What each ``tyler-store`` command does, once :mod:`tyler_core.cli` has parsed its arguments.

Store commands (``demo``, ``list``, ``show``, ``delete``, ``find``, ``stats``) take the store opened
from ``--url``; the others (``copy``, ``export``, ``import``, ``backends``, ``migrate``, ``check``)
open what they need themselves. Each returns the exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from tyler_core.backend import Capabilities
from tyler_core.cli_demo import demo_threads
from tyler_core.cli_format import stat_text, table, thread_rows
from tyler_core.jsonvalues import json_equal
from tyler_core.models import Thread
from tyler_core.registry import available_backends, normalize_url, resolve_backend
from tyler_core.store import ThreadStore
from tyler_core.transfer import (
    Progress,
    copy_threads,
    export_threads,
    import_threads,
    iterate_threads,
)
from tyler_core.urls import mask_url

__all__ = [
    "cmd_backends",
    "cmd_check",
    "cmd_copy",
    "cmd_delete",
    "cmd_demo",
    "cmd_export",
    "cmd_find",
    "cmd_import",
    "cmd_list",
    "cmd_migrate",
    "cmd_show",
    "cmd_stats",
]

#: Threads per page when ``find`` pages through a lookup.
_FIND_PAGE = 100


def _print_threads(threads: Sequence[Thread], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps([t.model_dump(mode="json") for t in threads], ensure_ascii=False))
    else:
        print(thread_rows(threads))


async def cmd_demo(store: ThreadStore, args: argparse.Namespace) -> int:
    for thread in demo_threads():
        await store.save(thread)
    print(f"Saved 4 sample threads to {mask_url(store.database_url) or 'memory://'}.\n")
    print("Most recent threads (list_recent(limit=10)):")
    print(thread_rows(await store.list_recent(10)))
    print('\nfind_by_attributes({"customer": "acme", "priority": "high"}):')
    print(thread_rows(await store.find_by_attributes({"customer": "acme", "priority": "high"})))
    print('\nfind_by_source("slack", {"channel": "C-support"}):')
    print(thread_rows(await store.find_by_source("slack", {"channel": "C-support"})))
    print(f"\nThe store now holds {await store.count()} threads.")
    return 0


async def cmd_list(store: ThreadStore, args: argparse.Namespace) -> int:
    threads = await store.list(limit=args.limit, offset=args.offset)
    _print_threads(threads, as_json=args.json)
    return 0


async def cmd_show(store: ThreadStore, args: argparse.Namespace) -> int:
    thread = await store.get(args.thread_id)
    if thread is None:
        print(f"no thread {args.thread_id!r}", file=sys.stderr)
        return 1
    if args.json:
        print(thread.model_dump_json(indent=2))
        return 0
    print(f"{thread.title}  (id {thread.id}, version {thread.version})")
    print(f"source: {json.dumps(thread.source, ensure_ascii=False)}")
    print(f"attributes: {json.dumps(thread.attributes, ensure_ascii=False)}\n")
    rows = []
    for m in thread.messages:
        content = m.content if isinstance(m.content, str) else json.dumps(m.content)
        reactions = " ".join(f"{e}x{len(u)}" for e, u in m.reactions.items())
        rows.append((m.sequence, m.role, (content or "")[:60], len(m.attachments), reactions))
    print(table(rows, ("seq", "role", "content", "files", "reactions")))
    return 0


async def cmd_delete(store: ThreadStore, args: argparse.Namespace) -> int:
    if await store.delete(args.thread_id):
        print(f"deleted {args.thread_id}")
        return 0
    print(f"no thread {args.thread_id!r}", file=sys.stderr)
    return 1


def _parse_pairs(pairs: Sequence[str], option: str) -> dict[str, Any]:
    """``k=v`` pairs; ``v`` is read as JSON when it is JSON (``n=1``, ``ok=true``), else text."""
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{option} takes KEY=VALUE, not {pair!r}")
        try:
            parsed[key] = json.loads(raw)
        except json.JSONDecodeError:
            parsed[key] = raw
    return parsed


async def cmd_find(store: ThreadStore, args: argparse.Namespace) -> int:
    attributes = _parse_pairs(args.attr, "--attr")
    properties = _parse_pairs(args.prop, "--prop")
    if args.source is None and properties:
        raise ValueError("--prop needs --source")
    if args.source is None and not attributes:
        raise ValueError("find needs --attr KEY=VALUE or --source NAME")
    if args.source is None:
        threads = await store.find_by_attributes(attributes, limit=args.limit)
    elif not attributes:
        threads = await store.find_by_source(args.source, properties, limit=args.limit)
    else:
        threads = await _find_both(store, attributes, args.source, properties, args.limit)
    _print_threads(threads, as_json=args.json)
    return 0


async def _find_both(
    store: ThreadStore,
    attributes: dict[str, Any],
    source: str,
    properties: dict[str, Any],
    limit: int | None,
) -> list[Thread]:
    """The first ``limit`` threads matching the source and the attributes, in list order.

    Pages of the source lookup are filtered on the attributes here, with the lookups' own
    equality, until enough match: limiting both lookups and intersecting them would lose a
    thread that one lookup's first page leaves out.
    """
    found: list[Thread] = []
    offset = 0
    while limit is None or len(found) < limit:
        page = await store.find_by_source(source, properties, limit=_FIND_PAGE, offset=offset)
        found += [t for t in page if _holds(t.attributes, attributes)]
        if len(page) < _FIND_PAGE:
            break
        offset += len(page)
    return found[:limit]


def _holds(document: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return all(key in document and json_equal(document[key], v) for key, v in wanted.items())


async def cmd_stats(store: ThreadStore, args: argparse.Namespace) -> int:
    threads = messages = 0
    async for thread in iterate_threads(store):
        threads += 1
        messages += len(thread.messages)
    stats = {
        "store": mask_url(store.database_url) or "memory://",
        "backend": type(store.backend).__name__,
        "namespace": store.options.namespace,
        "threads": threads,
        "messages": messages,
        "size_bytes": await store.backend.storage_size(),
        "capabilities": [n for n in Capabilities.names() if getattr(store.capabilities, n)],
    }
    if args.json:
        print(json.dumps(stats))
    else:
        print(
            table(
                [(k, stat_text(k, v)) for k, v in stats.items()],
                ("", ""),
            )
        )
    return 0


def _progress_printer(quiet: bool) -> Callable[[Progress], None] | None:
    if quiet or not sys.stderr.isatty():
        return None
    return lambda progress: print("\r" + progress.line(), end="", file=sys.stderr, flush=True)


async def cmd_copy(args: argparse.Namespace) -> int:
    # A namespace of None is no keyword: the URL's ?namespace= applies, else the default.
    target_namespace = args.target_namespace or args.namespace
    async with (
        await ThreadStore.create(args.source, namespace=args.namespace) as source,
        await ThreadStore.create(args.target, namespace=target_namespace) as target,
    ):
        report = await copy_threads(
            source,
            target,
            batch=args.batch,
            overwrite=args.overwrite,
            on_progress=_progress_printer(args.quiet),
        )
    if not args.quiet and sys.stderr.isatty():
        print(file=sys.stderr)
    print(
        f"copied {report.copied} threads ({report.messages} messages), "
        f"skipped {report.skipped} already there; "
        f"source {report.source_count} threads, target {report.target_count} threads"
    )
    if report.kept_newer:
        print(
            f"kept {report.kept_newer} threads the target holds at a newer version than the "
            "source (--overwrite replaces them)",
            file=sys.stderr,
        )
    if report.verified:
        print(f"verified: counts and checksums match ({report.source_checksum[:16]})")
        return 0
    print(
        "NOT verified: the stores differ (the target holds other threads or newer versions, "
        "or the source changed during the copy)",
        file=sys.stderr,
    )
    return 1


async def cmd_export(args: argparse.Namespace) -> int:
    async with await ThreadStore.create(args.store_url, namespace=args.namespace) as store:
        if args.file == "-":
            count = await export_threads(store, sys.stdout)
        else:
            # The command owns its event loop; nothing else runs while it writes.
            with open(args.file, "w", encoding="utf-8") as out:  # noqa: ASYNC230
                count = await export_threads(store, out)
    print(f"exported {count} threads", file=sys.stderr)
    return 0


async def cmd_import(args: argparse.Namespace) -> int:
    async with await ThreadStore.create(args.store_url, namespace=args.namespace) as store:
        if args.file == "-":
            count = await import_threads(store, sys.stdin)
        else:
            with open(args.file, encoding="utf-8") as lines:  # noqa: ASYNC230
                count = await import_threads(store, lines)
    print(f"imported {count} threads", file=sys.stderr)
    return 0


def cmd_backends(args: argparse.Namespace) -> int:
    rows = []
    for info in available_backends():
        status = "yes" if info.installed else f"no (missing {', '.join(info.missing) or '?'})"
        rows.append((info.scheme, info.install or "-", status, info.provider))
    if args.json:
        print(
            json.dumps(
                [
                    dict(zip(("scheme", "install", "driver", "provider"), r, strict=True))
                    for r in rows
                ]
            )
        )
    else:
        print(table(rows, ("scheme", "install", "driver imports", "provided by")))
    return 0


def _with_namespace(url: str, namespace: str | None) -> str:
    """``url`` with ``?namespace=`` set to ``--namespace`` when given: migrate reads the URL's
    first, and the option must win there as it does for every other command."""
    if namespace is None:
        return url
    base, _, query = url.partition("?")
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "namespace"]
    return f"{base}?{urlencode([*kept, ('namespace', namespace)])}"


def cmd_migrate(args: argparse.Namespace) -> int:
    url = _with_namespace(normalize_url(args.store_url), args.namespace)
    backend = resolve_backend(url)  # unknown scheme or missing driver: a clear error first
    if not backend.__module__.startswith("tyler_sql."):
        print(
            f"tyler-store: error: migrate works on SQL stores; {mask_url(args.store_url)} is "
            f"served by {backend.__name__}, which needs no migrations",
            file=sys.stderr,
        )
        return 2
    from tyler_sql import migrate

    if args.check:
        current, message = migrate.check(url)
        print(message)
        return 0 if current else 1
    migrate.upgrade(url)
    print(f"{mask_url(args.store_url)}: schema is up to date")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Run the conformance suite in a pytest subprocess, then print a report per capability.

    Every test opens its stores on a fresh throwaway namespace and purges and drops it
    afterwards, so the store's own threads are neither seen nor touched.
    """
    try:
        import pytest  # noqa: F401

        import tyler_core.testing  # noqa: F401
    except ImportError as exc:
        print(f"check needs the testing extra: {exc}", file=sys.stderr)
        return 2
    from tyler_core.check_report import format_report, read_report

    # Fail on an unknown scheme or a missing driver here, with our message, not in pytest.
    resolve_backend(normalize_url(args.store_url))
    declared = asyncio.run(_declared_capabilities(args.store_url))
    with tempfile.TemporaryDirectory(prefix="tyler-check-") as scratch:
        report_file = Path(scratch) / "report.json"
        command = [
            sys.executable,
            "-m",
            "pytest",
            "--pyargs",
            "tyler_core.testing",
            "--tyler-url",
            args.store_url,
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "tyler_core.check_report",
            "--tyler-check-report",
            str(report_file),
            # Outside a project with a pytest configuration, pytest-asyncio would warn.
            "-o",
            "asyncio_default_fixture_loop_scope=function",
            *args.pytest_args,
        ]
        status = subprocess.call(command)
        if not report_file.exists():
            print(
                f"tyler-store: error: the suite did not run (pytest exit {status})", file=sys.stderr
            )
            return status or 1
        results = read_report(report_file)
    print()
    print(format_report(mask_url(args.store_url) or "memory://", results, declared))
    return status


async def _declared_capabilities(url: str) -> dict[str, bool]:
    """What the backend declares once open (``open`` may change it: an in-memory SQLite
    database is not shared), read on a throwaway namespace dropped afterwards, like the
    suite's: test outcomes cannot tell, since a run may select or reach no test of a group."""
    from tyler_core.testing.base import fresh_namespace

    async with await ThreadStore.create(url, namespace=fresh_namespace()) as store:
        try:
            return {name: getattr(store.capabilities, name) for name in Capabilities.names()}
        finally:
            await store.backend.drop()
