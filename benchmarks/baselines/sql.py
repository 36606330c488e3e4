"""The SQL baseline: three plain tables (threads, messages, an indexed key lookup table) written
and read with the raw driver, one statement per step, the fewest round trips that do the job."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Self

from benchmarks.baselines import Baseline, Doc, decode
from benchmarks.baselines.sqldrivers import Driver, Row, driver_for_url
from benchmarks.config import RAW_PREFIX
from benchmarks.data import RawThread

__all__ = ["SQLBaseline"]

T = f"{RAW_PREFIX}_threads"
M = f"{RAW_PREFIX}_messages"
K = f"{RAW_PREFIX}_keys"
_CHUNK = 2000  # threads per bulk-insert transaction


def _ddl(dialect: str) -> list[str]:
    ids = {"postgresql": 'VARCHAR(255) COLLATE "C"', "mysql": "VARCHAR(255)"}.get(dialect, "TEXT")
    text = "MEDIUMTEXT" if dialect == "mysql" else "TEXT"
    tail = (
        " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin" if dialect == "mysql" else ""
    )
    key = "VARCHAR(191)" if dialect == "mysql" else "TEXT"
    value = "VARCHAR(512)" if dialect == "mysql" else "TEXT"
    return [
        f"CREATE TABLE {T} (id {ids} PRIMARY KEY, title {text}, created_at BIGINT NOT NULL, "
        f"updated_at BIGINT NOT NULL, attributes {text}, source {text}, version BIGINT NOT NULL)"
        + tail,
        f"CREATE INDEX {T}_recent ON {T} (updated_at, id)",
        f"CREATE TABLE {M} (thread_id {ids} NOT NULL, seq BIGINT NOT NULL, id {ids} NOT NULL, "
        f"doc {text} NOT NULL, PRIMARY KEY (thread_id, seq))" + tail,
        f"CREATE TABLE {K} (thread_id {ids} NOT NULL, kind CHAR(1) NOT NULL, k {key} NOT NULL, "
        f"v {value} NOT NULL)" + tail,
        f"CREATE INDEX {K}_lookup ON {K} (kind, k, v)",
    ]


class SQLBaseline(Baseline):
    """Raw asyncpg / aiosqlite / asyncmy against ``bench_raw_*`` tables."""

    def __init__(self, driver: Driver) -> None:
        self._db = driver
        self._pg = driver.dialect == "postgresql"

    @classmethod
    def for_url(cls, url: str) -> Self:
        """The baseline on the server (or SQLite file) of a store URL."""
        return cls(driver_for_url(url))

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def drop(self) -> None:
        async with self._db.session() as tx:
            for table in (K, M, T):
                await tx.execute(f"DROP TABLE IF EXISTS {table}")

    async def reset(self) -> None:
        await self.drop()
        async with self._db.session() as tx:
            for statement in _ddl(self._db.dialect):
                await tx.execute(statement)

    async def server_version(self) -> str:
        query = {
            "postgresql": "SELECT 'PostgreSQL ' || current_setting('server_version')",
            "sqlite": "SELECT 'SQLite ' || sqlite_version()",
        }.get(self._db.dialect, "SELECT VERSION()")
        async with self._db.session() as tx:
            rows = await tx.fetch(query)
        return str(rows[0][0])

    # -- writes ----------------------------------------------------------------------------------

    @staticmethod
    def _rows(threads: Sequence[RawThread]) -> tuple[list[Row], list[Row], list[Row]]:
        heads: list[Row] = [
            (t.id, t.title, t.created_at, t.updated_at, t.attributes, t.source, t.version)
            for t in threads
        ]
        messages: list[Row] = [
            (t.id, seq, mid, doc) for t in threads for mid, seq, doc in t.messages
        ]
        keys: list[Row] = [(t.id, kind, k, v) for t in threads for kind, k, v in t.keys]
        return heads, messages, keys

    async def _insert(self, tx: Any, threads: Sequence[RawThread]) -> None:
        heads, messages, keys = self._rows(threads)
        tables = (
            (
                T,
                ("id", "title", "created_at", "updated_at", "attributes", "source", "version"),
                heads,
            ),
            (M, ("thread_id", "seq", "id", "doc"), messages),
            (K, ("thread_id", "kind", "k", "v"), keys),
        )
        for table, columns, rows in tables:
            if not rows:
                continue
            if self._pg and len(rows) > 50:
                await tx.connection.copy_records_to_table(table, records=rows, columns=columns)
            else:
                marks = ", ".join("?" * len(columns))
                await tx.executemany(
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows
                )

    async def insert_threads(self, threads: Sequence[RawThread]) -> None:
        for start in range(0, len(threads), _CHUNK):
            async with self._db.transaction() as tx:
                await self._insert(tx, threads[start : start + _CHUNK])

    async def save_new(self, thread: RawThread) -> None:
        async with self._db.transaction() as tx:
            await self._insert(tx, [thread])

    async def append_one(
        self, thread_id: str, message: tuple[str, int, str], updated_at: int, version: int
    ) -> None:
        mid, seq, doc = message
        async with self._db.transaction() as tx:
            await tx.execute(
                f"INSERT INTO {M} (thread_id, seq, id, doc) VALUES (?, ?, ?, ?)",
                (thread_id, seq, mid, doc),
            )
            await tx.execute(
                f"UPDATE {T} SET updated_at = ?, version = ? WHERE id = ?",
                (updated_at, version, thread_id),
            )

    async def append_locked(self, thread_id: str, message: Doc, updated_at: int) -> int:
        lock = "" if self._db.dialect == "sqlite" else " FOR UPDATE"
        async with self._db.transaction() as tx:
            await tx.fetch(f"SELECT version FROM {T} WHERE id = ?{lock}", (thread_id,))
            rows = await tx.fetch(
                f"SELECT COALESCE(MAX(seq), 0) FROM {M} WHERE thread_id = ?", (thread_id,)
            )
            sequence = int(rows[0][0]) + 1
            message["sequence"] = sequence
            await tx.execute(
                f"INSERT INTO {M} (thread_id, seq, id, doc) VALUES (?, ?, ?, ?)",
                (thread_id, sequence, message["id"], json.dumps(message)),
            )
            await tx.execute(
                f"UPDATE {T} SET updated_at = ?, version = version + 1 WHERE id = ?",
                (updated_at, thread_id),
            )
        return sequence

    # -- reads -----------------------------------------------------------------------------------

    async def _with_messages(self, tx: Any, heads: Sequence[Row]) -> list[Doc]:
        if not heads:
            return []
        ids = [h[0] for h in heads]
        if self._pg:
            rows = await tx.fetch(
                f"SELECT thread_id, doc FROM {M} WHERE thread_id = ANY(?) ORDER BY thread_id, seq",
                (ids,),
            )
        else:
            rows = await tx.fetch(
                f"SELECT thread_id, doc FROM {M} WHERE thread_id IN ({self._db.in_list(len(ids))})"
                " ORDER BY thread_id, seq",
                ids,
            )
        by_thread: dict[str, list[str]] = {i: [] for i in ids}
        for thread_id, doc in rows:
            by_thread[thread_id].append(doc)
        return [decode(h[0], h[1], h[2], h[3], by_thread[h[0]]) for h in heads]

    async def get(self, thread_id: str) -> Doc | None:
        async with self._db.session() as tx:
            heads = await tx.fetch(
                f"SELECT id, attributes, source, version FROM {T} WHERE id = ?", (thread_id,)
            )
            if not heads:
                return None
            rows = await tx.fetch(
                f"SELECT doc FROM {M} WHERE thread_id = ? ORDER BY seq", (thread_id,)
            )
        head = heads[0]
        return decode(head[0], head[1], head[2], head[3], (r[0] for r in rows))

    async def page(self, limit: int, offset: int) -> list[Doc]:
        async with self._db.session() as tx:
            heads = await tx.fetch(
                f"SELECT id, attributes, source, version FROM {T} "
                "ORDER BY updated_at DESC, id DESC LIMIT ? OFFSET ?",
                (limit, offset),
            )
            return await self._with_messages(tx, heads)

    async def find(self, kind: str, key: str, value: str) -> list[Doc]:
        async with self._db.session() as tx:
            heads = await tx.fetch(
                f"SELECT t.id, t.attributes, t.source, t.version FROM {K} k "
                f"JOIN {T} t ON t.id = k.thread_id WHERE k.kind = ? AND k.k = ? AND k.v = ? "
                "ORDER BY t.updated_at DESC, t.id DESC",
                (kind, key, value),
            )
            return await self._with_messages(tx, heads)
