"""What the benchmark runs: backends with their URLs, and the sizes of full and quick runs."""

from __future__ import annotations

import os
import socket
from contextlib import suppress
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["BACKENDS", "FULL", "QUICK", "BackendSpec", "Sizes", "answers", "backend_url"]

# Per process, so two runs on one server (a full run beside CI's smoke run) never share, purge
# or drop each other's data; each run drops its own at the end.
NAMESPACE = f"bench_{os.getpid()}"
RAW_PREFIX = f"bench_raw_{os.getpid()}"


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """A backend the benchmark knows: its URL variable and local default."""

    name: str
    variable: str | None
    default: str
    port: int | None
    # Only the pure-Python wire-compatible test server speaks Mongo here: not representative.
    representative: bool = True


BACKENDS: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in (
        BackendSpec("memory", None, "memory://", None),
        BackendSpec("sqlite", None, "sqlite+aiosqlite:///{tmp}/bench.db", None),
        BackendSpec(
            "postgres",
            "TYLER_TEST_POSTGRES_URL",
            "postgresql+asyncpg://postgres@127.0.0.1/test",
            5432,
        ),
        BackendSpec("mysql", "TYLER_TEST_MYSQL_URL", "mysql+asyncmy://root@127.0.0.1/test", 3306),
        BackendSpec("redis", "TYLER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0", 6379),
        BackendSpec(
            "mongo",
            "TYLER_TEST_MONGODB_URL",
            "mongodb://127.0.0.1:27017",
            27017,
            representative=False,
        ),
    )
}


def backend_url(spec: BackendSpec, tmp: str) -> str:
    """The URL for ``spec``: its variable if set, else the local default."""
    if spec.variable and os.environ.get(spec.variable):
        return os.environ[spec.variable]
    return spec.default.format(tmp=tmp)


def answers(url: str, default_port: int | None, timeout: float = 1.0) -> bool:
    """Whether the server of ``url`` accepts TCP connections (always true without a port)."""
    if default_port is None:
        return True
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    try:
        port = parts.port or default_port
    except ValueError:
        port = default_port
    with suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


@dataclass(frozen=True, slots=True)
class Sizes:
    """Workload sizes. ``quick`` ones make a smoke test of well under a minute per backend."""

    w1_lengths: tuple[int, ...]
    w1_ops: int
    w2_lengths: tuple[int, ...]
    reads: int
    lookups: int  # repeats of each W4 lookup (about a millisecond each: more, for a steady median)
    w3_threads: int
    w3_messages: int
    w3_offset: int
    w4_threads: tuple[int, int]
    w5_threads: int
    w5_save_tasks: int
    w5_append_tasks: int
    w5_appends: int
    memory_messages: int
    populate_budget: float  # seconds allowed for saving W4's extra threads through the store
    batch: int = 50  # saves gathered at once while populating


FULL = Sizes(
    w1_lengths=(10, 100, 1000),
    w1_ops=41,
    w2_lengths=(100, 1000),
    reads=9,
    lookups=41,
    w3_threads=10_000,
    w3_messages=5,
    w3_offset=5000,
    w4_threads=(10_000, 100_000),
    w5_threads=2000,
    w5_save_tasks=32,
    w5_append_tasks=16,
    w5_appends=50,
    memory_messages=10_000,
    populate_budget=480.0,
)

QUICK = Sizes(
    w1_lengths=(10, 50),
    w1_ops=2,
    w2_lengths=(10, 50),
    reads=1,
    lookups=1,
    w3_threads=200,
    w3_messages=2,
    w3_offset=100,
    w4_threads=(200, 400),
    w5_threads=40,
    w5_save_tasks=4,
    w5_append_tasks=4,
    w5_appends=3,
    memory_messages=200,
    populate_budget=20.0,
)

#: The Mongo test server is pure Python (about a millisecond per document written, and it answers
#: nothing while it serves one command: saving a 10,000-message thread holds it for about 8 s):
#: full runs use these.
MONGO_FULL = Sizes(
    w1_lengths=(10, 50, 200),
    w1_ops=5,
    w2_lengths=(50, 200),
    reads=3,
    lookups=3,
    w3_threads=1000,
    w3_messages=5,
    w3_offset=500,
    w4_threads=(1000, 3000),
    w5_threads=100,
    w5_save_tasks=32,
    w5_append_tasks=16,
    w5_appends=5,
    memory_messages=300,
    populate_budget=60.0,
)
