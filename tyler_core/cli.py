"""The ``tyler-store`` command: inspect stores, copy/export/import them, run the demo, migrate SQL
schemas, check backends.

The store URL comes from ``--url``, else ``TYLER_STORE_URL``, else the embedded SQLite file
``sqlite+aiosqlite:///tyler-threads.db`` (in memory when the SQLite extra is not installed).
URLs are always shown masked.

This module parses the command line and dispatches it; the commands live in
:mod:`tyler_core.cli_commands`, their output formatting in :mod:`tyler_core.cli_format` and the
demo's sample threads in :mod:`tyler_core.cli_demo`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from tyler_core.cli_commands import (
    cmd_backends,
    cmd_check,
    cmd_copy,
    cmd_delete,
    cmd_demo,
    cmd_export,
    cmd_find,
    cmd_import,
    cmd_list,
    cmd_migrate,
    cmd_show,
    cmd_stats,
)
from tyler_core.errors import TylerStoreError
from tyler_core.registry import resolve_backend
from tyler_core.store import ThreadStore
from tyler_core.urls import mask_urls_in

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
    "demo": cmd_demo,
    "list": cmd_list,
    "show": cmd_show,
    "delete": cmd_delete,
    "find": cmd_find,
    "stats": cmd_stats,
}

_URL_COMMANDS = {"copy": cmd_copy, "export": cmd_export, "import": cmd_import}


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
            return cmd_backends(args)
        if args.command == "migrate":
            return cmd_migrate(args)
        if args.command == "check":
            return cmd_check(args)
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
