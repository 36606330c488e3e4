"""The ``tyler-store`` command: inspect stores, copy/export/import them, run the demo, migrate SQL
schemas, check backends.

The store URL comes from ``--url``, else ``TYLER_STORE_URL``, else the embedded SQLite file
``sqlite+aiosqlite:///tyler-threads.db`` (in memory when the SQLite extra is not installed).
URLs are always shown masked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Coroutine, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from tyler_core.backend import Capabilities
from tyler_core.errors import TylerStoreError
from tyler_core.models import Attachment, Message, Thread, utc_now
from tyler_core.registry import available_backends, normalize_url, resolve_backend
from tyler_core.store import ThreadStore
from tyler_core.transfer import (
    Progress,
    copy_threads,
    export_threads,
    import_threads,
    iterate_threads,
)
from tyler_core.urls import mask_url, mask_urls_in

__all__ = ["main"]

DEFAULT_URL = "sqlite+aiosqlite:///tyler-threads.db"


def default_url() -> tuple[str, str | None]:
    """The store URL to use when none is given, and a note to show about it (or ``None``)."""
    configured = os.environ.get("TYLER_STORE_URL")
    if configured:
        return configured, None
    try:
        resolve_backend(DEFAULT_URL)
    except TylerStoreError:
        return "memory://", (
            "note: the SQLite backend is not installed, so this store lives in memory and is "
            'gone when the command ends (pip install "tyler-threadstore[sqlite]")'
        )
    return DEFAULT_URL, None


def _table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _thread_rows(threads: Sequence[Thread]) -> str:
    if not threads:
        return "(no threads)"
    rows = [
        (
            t.id[:36],
            (t.title or "")[:40],
            len(t.messages),
            (t.source or {}).get("name", ""),
            json.dumps(t.attributes, ensure_ascii=False)[:40],
            t.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
        for t in threads
    ]
    return _table(rows, ("id", "title", "messages", "source", "attributes", "updated (UTC)"))


def _demo_threads() -> list[Thread]:
    start = utc_now() - timedelta(hours=3)
    specs: list[tuple[str, str | None, dict[str, Any] | None, dict[str, Any]]] = [
        (
            "Refund for order 1042",
            "slack",
            {"channel": "C-support", "thread_ts": "1718.01"},
            {"customer": "acme", "priority": "high", "tags": ["billing"]},
        ),
        (
            "Onboarding questions",
            "slack",
            {"channel": "C-sales", "thread_ts": "1718.02"},
            {"customer": "globex", "priority": "low"},
        ),
        (
            "Nightly report failed",
            "github",
            {"repo": "acme/etl", "issue": 77},
            {"customer": "acme", "priority": "high", "tags": ["ops"]},
        ),
        ("Quick translation", None, None, {"customer": "initech", "priority": "low"}),
    ]
    threads = []
    for index, (title, source, props, attributes) in enumerate(specs):
        thread = Thread(
            title=title,
            attributes=attributes,
            source=None if source is None else {"name": source, **(props or {})},
            created_at=start + timedelta(minutes=10 * index),
        )
        thread.add_message(Message(role="system", content="You are a helpful support agent."))
        user = Message(role="user", content=f"Hello, I need help with: {title.lower()}.")
        thread.add_message(user)
        reply = Message(
            role="assistant",
            content="Of course. Let me look into it.",
            tool_calls=[
                {
                    "id": f"call_{index}",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": "{}"},
                }
            ],
            metrics={"model": "demo-model", "usage": {"prompt_tokens": 42, "completion_tokens": 9}},
        )
        thread.add_message(reply)
        thread.add_message(
            Message(role="tool", tool_call_id=f"call_{index}", name="lookup", content="found")
        )
        if index % 2 == 0:
            user.attachments.append(
                Attachment(
                    filename="screenshot.png",
                    mime_type="image/png",
                    size=48213,
                    storage_path=f"files/{thread.id}/screenshot.png",
                    status="stored",
                )
            )
        thread.add_reaction(reply.id, "👍", "user-1")
        thread.add_reaction(reply.id, "👍", "user-2")
        threads.append(thread)
    return threads


async def _cmd_demo(store: ThreadStore, args: argparse.Namespace) -> int:
    for thread in _demo_threads():
        await store.save(thread)
    print(f"Saved 4 sample threads to {mask_url(store.database_url) or 'memory://'}.\n")
    print("Most recent threads (list_recent(limit=10)):")
    print(_thread_rows(await store.list_recent(10)))
    print('\nfind_by_attributes({"customer": "acme", "priority": "high"}):')
    print(_thread_rows(await store.find_by_attributes({"customer": "acme", "priority": "high"})))
    print('\nfind_by_source("slack", {"channel": "C-support"}):')
    print(_thread_rows(await store.find_by_source("slack", {"channel": "C-support"})))
    print(f"\nThe store now holds {await store.count()} threads.")
    return 0


async def _cmd_list(store: ThreadStore, args: argparse.Namespace) -> int:
    threads = await store.list(limit=args.limit, offset=args.offset)
    if args.json:
        print(json.dumps([t.model_dump(mode="json") for t in threads], ensure_ascii=False))
    else:
        print(_thread_rows(threads))
    return 0


async def _cmd_show(store: ThreadStore, args: argparse.Namespace) -> int:
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
    print(_table(rows, ("seq", "role", "content", "files", "reactions")))
    return 0


async def _cmd_delete(store: ThreadStore, args: argparse.Namespace) -> int:
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


async def _cmd_find(store: ThreadStore, args: argparse.Namespace) -> int:
    attributes = _parse_pairs(args.attr, "--attr")
    properties = _parse_pairs(args.prop, "--prop")
    if args.source is None and properties:
        raise ValueError("--prop needs --source")
    if args.source is None and not attributes:
        raise ValueError("find needs --attr KEY=VALUE or --source NAME")
    threads = None
    if attributes:
        threads = await store.find_by_attributes(attributes, limit=args.limit)
    if args.source is not None:
        by_source = await store.find_by_source(args.source, properties, limit=args.limit)
        if threads is None:
            threads = by_source
        else:
            ids = {t.id for t in by_source}
            threads = [t for t in threads if t.id in ids]
    assert threads is not None
    if args.json:
        print(json.dumps([t.model_dump(mode="json") for t in threads], ensure_ascii=False))
    else:
        print(_thread_rows(threads))
    return 0


def _stat_text(key: str, value: object) -> object:
    if isinstance(value, list):
        return ", ".join(value) or "-"
    if key == "size_bytes":
        return _human_size(value) if isinstance(value, int) else "unknown (the backend cannot tell)"
    return value


def _human_size(size: int) -> str:
    amount, unit = float(size), "B"
    for larger in ("KiB", "MiB", "GiB", "TiB"):
        if amount < 1024:
            break
        amount, unit = amount / 1024, larger
    return f"{size} B" if unit == "B" else f"{amount:.1f} {unit} ({size:,} B)"


async def _cmd_stats(store: ThreadStore, args: argparse.Namespace) -> int:
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
            _table(
                [(k, _stat_text(k, v)) for k, v in stats.items()],
                ("", ""),
            )
        )
    return 0


def _progress_printer(quiet: bool) -> Callable[[Progress], None] | None:
    if quiet or not sys.stderr.isatty():
        return None
    return lambda progress: print("\r" + progress.line(), end="", file=sys.stderr, flush=True)


async def _cmd_copy(args: argparse.Namespace) -> int:
    async with (
        await ThreadStore.create(args.source, namespace=args.namespace) as source,
        await ThreadStore.create(
            args.target, namespace=args.target_namespace or args.namespace
        ) as target,
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
    if report.verified:
        print(f"verified: counts and checksums match ({report.source_checksum[:16]})")
        return 0
    print(
        "NOT verified: the stores differ (the target holds other threads, or the source "
        "changed during the copy)",
        file=sys.stderr,
    )
    return 1


async def _cmd_export(args: argparse.Namespace) -> int:
    async with await ThreadStore.create(args.store_url, namespace=args.namespace) as store:
        if args.file == "-":
            count = await export_threads(store, sys.stdout)
        else:
            # The command owns its event loop; nothing else runs while it writes.
            with open(args.file, "w", encoding="utf-8") as out:  # noqa: ASYNC230
                count = await export_threads(store, out)
    print(f"exported {count} threads", file=sys.stderr)
    return 0


async def _cmd_import(args: argparse.Namespace) -> int:
    async with await ThreadStore.create(args.store_url, namespace=args.namespace) as store:
        if args.file == "-":
            count = await import_threads(store, sys.stdin)
        else:
            with open(args.file, encoding="utf-8") as lines:  # noqa: ASYNC230
                count = await import_threads(store, lines)
    print(f"imported {count} threads", file=sys.stderr)
    return 0


def _cmd_backends(args: argparse.Namespace) -> int:
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
        print(_table(rows, ("scheme", "install", "driver imports", "provided by")))
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    url = normalize_url(args.store_url)
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
        current, message = migrate.check(url, namespace=args.namespace)
        print(message)
        return 0 if current else 1
    migrate.upgrade(url, namespace=args.namespace)
    print(f"{mask_url(args.store_url)}: schema is up to date")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
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
    print(format_report(mask_url(args.store_url) or "memory://", results))
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tyler-store",
        description="Inspect and operate tyler-threadstore stores.",
    )
    parser.add_argument(
        "--url", help="store URL (default: $TYLER_STORE_URL or " + DEFAULT_URL + ")"
    )
    parser.add_argument("--namespace", default="tyler", help="store namespace (default: tyler)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("demo", help="fill the store with sample threads and query them")
    p = sub.add_parser("backends", help="installed URL schemes and whether their drivers import")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser("list", help="list threads, most recent first")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser("show", help="show one thread")
    p.add_argument("thread_id")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser("delete", help="delete one thread")
    p.add_argument("thread_id")
    p = sub.add_parser("find", help="threads by attributes and/or source")
    p.add_argument("--attr", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--source", metavar="NAME")
    p.add_argument(
        "--prop",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="source property (with --source)",
    )
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser("stats", help="threads and messages in the store")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser("copy", help="copy every thread from one store to another")
    p.add_argument("source", metavar="SRC_URL")
    p.add_argument("target", metavar="DST_URL")
    p.add_argument("--target-namespace", help="namespace in DST (default: --namespace)")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="rewrite threads already present at the same version",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = sub.add_parser("export", help="write every thread as JSON Lines")
    p.add_argument("store_url", metavar="URL")
    p.add_argument("file", metavar="FILE", nargs="?", default="-")
    p = sub.add_parser("import", help="save every thread of a JSON Lines export")
    p.add_argument("store_url", metavar="URL")
    p.add_argument("file", metavar="FILE", nargs="?", default="-")
    p = sub.add_parser("migrate", help="upgrade a SQL store's schema")
    p.add_argument("store_url", metavar="URL")
    p.add_argument("--check", action="store_true", help="exit 1 when the schema is behind")
    p = sub.add_parser("check", help="run the conformance suite against a live store")
    p.add_argument("store_url", metavar="URL")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="extra pytest arguments")
    return parser


_STORE_COMMANDS: dict[
    str, Callable[[ThreadStore, argparse.Namespace], Coroutine[Any, Any, int]]
] = {
    "demo": _cmd_demo,
    "list": _cmd_list,
    "show": _cmd_show,
    "delete": _cmd_delete,
    "find": _cmd_find,
    "stats": _cmd_stats,
}

_URL_COMMANDS = {"copy": _cmd_copy, "export": _cmd_export, "import": _cmd_import}


async def _with_store(args: argparse.Namespace) -> int:
    url, note = (args.url, None) if args.url else default_url()
    if note:
        print(note, file=sys.stderr)
    async with await ThreadStore.create(url, namespace=args.namespace) as store:
        return await _STORE_COMMANDS[args.command](store, args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "backends":
            return _cmd_backends(args)
        if args.command == "migrate":
            return _cmd_migrate(args)
        if args.command == "check":
            return _cmd_check(args)
        if args.command in _URL_COMMANDS:
            return asyncio.run(_URL_COMMANDS[args.command](args))
        return asyncio.run(_with_store(args))
    except (TylerStoreError, ValueError, OSError) as exc:
        print(f"tyler-store: error: {mask_urls_in(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
