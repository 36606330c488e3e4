"""How many bytes a namespace's tables take (``tyler-store stats``), asked of each database's
own accounting: PostgreSQL ``pg_total_relation_size`` (tables, indexes and TOAST), MariaDB /
MySQL ``information_schema.tables`` after ``ANALYZE TABLE`` (InnoDB keeps estimates), SQLite's
``dbstat`` table (pages of the tables, their indexes and the search index)."""

from __future__ import annotations

import logging

from sqlalchemy import bindparam, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from tyler_sql.schema import Tables
from tyler_sql.search import fts_table

__all__ = ["namespace_size"]

logger = logging.getLogger("tyler_sql")


def _names(tables: Tables) -> list[str]:
    return [
        *(t.name for t in (tables.threads, tables.messages, tables.files, tables.reactions)),
        tables.keys.name,
        tables.version_table,
    ]


async def namespace_size(connection: AsyncConnection, tables: Tables, dialect: str) -> int | None:
    """The bytes of the namespace's tables and indexes, or ``None`` if the database cannot
    tell (a SQLite built without ``dbstat``)."""
    names = _names(tables)
    if dialect == "postgresql":
        total = 0
        for name in names:
            size = await connection.scalar(
                text("SELECT pg_total_relation_size(to_regclass(quote_ident(:name)))"),
                {"name": name},
            )
            total += int(size or 0)
        return total
    if dialect == "sqlite":
        fts = fts_table(tables.namespace)
        query = text(
            "SELECT COALESCE(SUM(d.pgsize), 0) FROM dbstat AS d "
            "JOIN sqlite_master AS m ON m.name = d.name "
            "WHERE m.tbl_name IN :names OR substr(m.tbl_name, 1, length(:fts)) = :fts"
        ).bindparams(bindparam("names", expanding=True))
        try:
            return int(await connection.scalar(query, {"names": names, "fts": fts}) or 0)
        except DBAPIError:  # no dbstat in this SQLite build
            logger.debug("SQLite has no dbstat table: size unknown")
            return None
    present = (
        await connection.execute(
            text(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name IN :names"
            ).bindparams(bindparam("names", expanding=True)),
            {"names": names},
        )
    ).scalars()
    quoted = [connection.dialect.identifier_preparer.quote(str(name)) for name in present]
    if quoted:
        await connection.execute(text(f"ANALYZE TABLE {', '.join(quoted)}"))
    size = await connection.scalar(
        text(
            "SELECT COALESCE(SUM(data_length + index_length), 0) FROM information_schema.tables "
            "WHERE table_schema = DATABASE() AND table_name IN :names"
        ).bindparams(bindparam("names", expanding=True)),
        {"names": names},
    )
    return int(size or 0)
