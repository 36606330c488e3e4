"""The ``tyler-store`` command: inspect stores, copy/export/import them, run the demo, migrate SQL
schemas, check backends.

The store URL comes from the command's URL argument (``export``, ``import``, ``migrate``,
``check``), else ``--url``, else ``TYLER_STORE_URL``, else the embedded SQLite file
``sqlite+aiosqlite:///tyler-threads.db`` (in memory when the SQLite extra is not installed);
``copy`` takes both of its URLs as arguments. ``--url`` and ``--namespace`` may come before or
after the command. URLs are always shown masked.

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


def _count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum``, refused with the option's name."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    return parse


def _root_options(*, after_command: bool) -> argparse.ArgumentParser:
    """``--url`` and ``--namespace``, taken before the command and after it.

    The copy each command gets has no defaults: argparse would let them overwrite what was
    given before the command. Without ``--namespace`` the URL's ``?namespace=`` applies, else
    the store's default, as for ``ThreadStore(url)``.
    """
    parent = argparse.ArgumentParser(add_help=False)
    default = argparse.SUPPRESS if after_command else None
    parent.add_argument(
        "--url",
        default=default,
        help="store URL (default: $TYLER_STORE_URL or " + DEFAULT_URL + ")",
    )
    parent.add_argument(
        "--namespace",
        default=default,
        help="store namespace (default: the URL's ?namespace=, else tyler)",
    )
    return parent


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tyler-store",
        description="Inspect and operate tyler-threadstore stores.",
        parents=[_root_options(after_command=False)],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = [_root_options(after_command=True)]

    def command(name: str, summary: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, parents=common, **kwargs)

    command("demo", "fill the store with sample threads and query them")
    p = command("backends", "installed URL schemes and whether their drivers import")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = command("list", "list threads, most recent first")
    p.add_argument("--limit", type=_count(0), default=20)
    p.add_argument("--offset", type=_count(0), default=0)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = command("show", "show one thread")
    p.add_argument("thread_id")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = command("delete", "delete one thread")
    p.add_argument("thread_id")
    p = command("find", "threads by attributes and/or source")
    p.add_argument("--attr", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--source", metavar="NAME")
    p.add_argument(
        "--prop",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="source property (with --source)",
    )
    p.add_argument("--limit", type=_count(0), default=None)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = command("stats", "threads and messages in the store")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = command("copy", "copy every thread from one store to another")
    p.add_argument("source", metavar="SRC_URL")
    p.add_argument("target", metavar="DST_URL")
    p.add_argument(
        "--target-namespace",
        help="namespace in DST (default: --namespace, else DST's ?namespace=, else tyler)",
    )
    p.add_argument("--batch", type=_count(1), default=100, help="threads per page (default 100)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="also rewrite threads the target holds at the same or a newer version",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = command("export", "write every thread as JSON Lines")
    p.add_argument("store_url", metavar="URL", nargs="?", help="store (with --url: omit it)")
    p.add_argument("file", metavar="FILE", nargs="?", help='output file (default "-": stdout)')
    p = command("import", "save every thread of a JSON Lines export")
    p.add_argument("store_url", metavar="URL", nargs="?", help="store (with --url: omit it)")
    p.add_argument("file", metavar="FILE", nargs="?", help='input file (default "-": stdin)')
    p = command("migrate", "upgrade a SQL store's schema")
    p.add_argument("store_url", metavar="URL", nargs="?")
    p.add_argument("--check", action="store_true", help="exit 1 when the schema is behind")
    p = command(
        "check",
        "run the conformance suite against a live store",
        usage="tyler-store check [-h] [--url URL] [URL] [PYTEST_ARGS ...]",
        epilog="Every argument after the URL (or after check's own options) goes to pytest.",
    )
    p.add_argument("store_url", metavar="URL", nargs="?")
    return parser


_OPTIONS_WITH_VALUE = ("--url", "--namespace")


def _split_pytest_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split the pytest arguments off a ``check`` command line: what follows check's own
    options and its optional URL.

    argparse cannot do it: with the URL optional, it reads ``check -k name`` as pytest's
    ``-k`` followed by the URL ``name``.
    """
    index = 0
    while index < len(argv) and argv[index].startswith("-"):
        index += 2 if argv[index] in _OPTIONS_WITH_VALUE else 1
    if index >= len(argv) or argv[index] != "check":
        return argv, []
    index += 1
    while index < len(argv) and argv[index].startswith("-"):
        token = argv[index]
        if token in _OPTIONS_WITH_VALUE:
            index += 2
        elif token.startswith(tuple(f"{o}=" for o in _OPTIONS_WITH_VALUE)) or token in (
            "-h",
            "--help",
        ):
            index += 1
        else:
            break
    if index < len(argv) and not argv[index].startswith("-"):
        index += 1
    return argv[:index], argv[index:]


def _resolve_store_url(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Set ``args.store_url``: the command's URL argument, else ``--url``, else
    ``$TYLER_STORE_URL``, else the default file.

    With ``--url``, the one argument of ``export`` and ``import`` is their FILE.
    """
    given = getattr(args, "store_url", None)
    if args.command in ("export", "import"):
        if args.url and given and args.file is None:
            given, args.file = None, given
        args.file = args.file or "-"
    if given and args.url:
        parser.error(f"{args.command}: give the store URL as an argument or as --url, not both")
    if given or args.url:
        args.store_url = given or args.url
        return
    args.store_url, note = default_url()
    if note:
        print(note, file=sys.stderr)


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
    # --namespace absent is None, which is no keyword: the URL's ?namespace= then applies.
    async with await ThreadStore.create(args.store_url, namespace=args.namespace) as store:
        return await _STORE_COMMANDS[args.command](store, args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    options, pytest_args = _split_pytest_args(list(sys.argv[1:] if argv is None else argv))
    parser = _parser()
    args = parser.parse_args(options)
    args.pytest_args = pytest_args
    if args.command not in ("backends", "copy"):
        _resolve_store_url(parser, args)
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
    except BrokenPipeError:
        # The reader went away (`tyler-store list | head`): stop quietly, as Unix tools do, and
        # point stdout at nothing so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (TylerStoreError, ValueError, OSError) as exc:
        print(f"tyler-store: error: {mask_urls_in(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
