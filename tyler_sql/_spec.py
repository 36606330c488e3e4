"""Entry-point targets of the SQL backend. Imports no driver: the registry checks ``requires``
before it imports :mod:`tyler_sql.backend`."""

from __future__ import annotations

from tyler_core.registry import BackendSpec

_TARGET = "tyler_sql.backend:SQLBackend"

sqlite = BackendSpec(
    target=_TARGET,
    requires=("sqlalchemy", "alembic", "aiosqlite"),
    install="tyler-threadstore[sqlite]",
    driver="aiosqlite",
)
postgresql_asyncpg = BackendSpec(
    target=_TARGET,
    requires=("sqlalchemy", "alembic", "asyncpg"),
    install="tyler-threadstore[postgres]",
    driver="asyncpg",
)
postgresql_psycopg = BackendSpec(
    target=_TARGET,
    requires=("sqlalchemy", "alembic", "psycopg"),
    install="tyler-threadstore[psycopg]",
    driver="psycopg",
)
mysql_asyncmy = BackendSpec(
    target=_TARGET,
    requires=("sqlalchemy", "alembic", "asyncmy"),
    install="tyler-threadstore[mysql]",
    driver="asyncmy",
)
