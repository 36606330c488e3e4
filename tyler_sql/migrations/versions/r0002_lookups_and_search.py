"""Indexed attribute and source lookups, full-text search, the listing index.

Revision ID: r0002
Revises: r0001
Create Date: 2026-11-26

Adds ``thread_keys`` (filled from every thread's attributes and source), ``messages.search_words``
(filled from every message's content) with the dialect's full-text index over it, and the index
on ``threads (updated_at, id)`` that listing pages use.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tyler_sql.migrations.env_helpers import dialect_name, namespace
from tyler_sql.rows import key_rows
from tyler_sql.schema import JSONText, LongText, SearchText, ascii_type, id_type
from tyler_sql.search import content_words, create_search_ddl, drop_search_ddl

revision: str = "r0002"
down_revision: str | None = "r0001"
branch_labels: str | None = None
depends_on: str | None = None

_BATCH = 1000


def upgrade() -> None:
    """Add the lookup table, the search column and index, and fill them."""
    ns = namespace()
    p = f"{ns}_"
    op.create_index(f"ix_{p}threads_updated", f"{p}threads", ["updated_at", "id"])
    op.add_column(f"{p}messages", sa.Column("search_words", SearchText, nullable=True))
    keys = op.create_table(
        f"{p}thread_keys",
        sa.Column("thread_id", id_type(), nullable=False),
        sa.Column("digest", ascii_type(64), nullable=False),
        sa.Column("kind", ascii_type(16), nullable=False),
        sa.Column("key", LongText, nullable=False),
        sa.Column("value", LongText, nullable=False),
        sa.PrimaryKeyConstraint("thread_id", "digest"),
        sa.ForeignKeyConstraint(
            ["thread_id"], [f"{p}threads.id"], ondelete="CASCADE", name=f"fk_{p}thread_keys_thread"
        ),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    op.create_index(f"ix_{p}thread_keys_digest", f"{p}thread_keys", ["digest"])
    _fill_keys(p, keys)
    _fill_search_words(p)
    for statement in create_search_ddl(ns, dialect_name()):
        op.execute(statement)


def _fill_keys(p: str, keys: sa.Table | None) -> None:
    assert keys is not None
    bind = op.get_bind()
    threads = sa.table(
        f"{p}threads",
        sa.column("id", id_type()),
        sa.column("attributes", JSONText()),
        sa.column("source", JSONText()),
    )
    last = ""
    while True:
        page = bind.execute(
            sa.select(threads.c.id, threads.c.attributes, threads.c.source)
            .where(threads.c.id > last)
            .order_by(threads.c.id)
            .limit(_BATCH)
        ).all()
        if not page:
            return
        rows = [row for t in page for row in key_rows(t.id, t.attributes, t.source)]
        if rows:
            bind.execute(keys.insert(), rows)
        last = page[-1].id


def _fill_search_words(p: str) -> None:
    bind = op.get_bind()
    messages = sa.table(
        f"{p}messages",
        sa.column("pk", sa.BigInteger()),
        sa.column("content", JSONText()),
        sa.column("search_words", SearchText),
    )
    update = (
        messages.update()
        .where(messages.c.pk == sa.bindparam("b_pk"))
        .values(search_words=sa.bindparam("b_words"))
    )
    last = -1
    while True:
        page = bind.execute(
            sa.select(messages.c.pk, messages.c.content)
            .where(messages.c.pk > last)
            .order_by(messages.c.pk)
            .limit(_BATCH)
        ).all()
        if not page:
            return
        rows = [{"b_pk": m.pk, "b_words": content_words(m.content)} for m in page]
        bind.execute(update, rows)
        last = page[-1].pk


def downgrade() -> None:
    """Remove what :func:`upgrade` added."""
    ns = namespace()
    p = f"{ns}_"
    for statement in drop_search_ddl(ns, dialect_name()):
        op.execute(statement)
    op.drop_index(f"ix_{p}thread_keys_digest", f"{p}thread_keys")
    op.drop_table(f"{p}thread_keys")
    op.drop_column(f"{p}messages", "search_words")
    op.drop_index(f"ix_{p}threads_updated", f"{p}threads")
