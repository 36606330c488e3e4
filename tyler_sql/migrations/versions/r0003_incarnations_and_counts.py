"""Incarnation tokens, attachment and reaction counts, source digests that cover the name.

Revision ID: r0003
Revises: r0002
Create Date: 2026-11-26

Adds ``threads.incarnation`` (existing rows keep ``NULL``: a thread loaded from such a row carries
no token and is checked by version only), ``messages.attachment_count`` and
``messages.reaction_count`` (filled from the attachment and reaction rows; a page whose messages
have none skips those tables), and recomputes the ``thread_keys`` digests of source properties,
which now cover the source's name (see :func:`tyler_sql.rows.source_digest`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import op

from tyler_core.jsonvalues import canonical_json
from tyler_sql.migrations.env_helpers import namespace
from tyler_sql.rows import SOURCE, key_digest, key_rows
from tyler_sql.schema import JSONText, ascii_type, id_type

revision: str = "r0003"
down_revision: str | None = "r0002"
branch_labels: str | None = None
depends_on: str | None = None

_BATCH = 1000


def upgrade() -> None:
    """Add the columns and fill them; recompute the source digests."""
    p = f"{namespace()}_"
    op.add_column(f"{p}threads", sa.Column("incarnation", ascii_type(32), nullable=True))
    for column in ("attachment_count", "reaction_count"):
        op.add_column(
            f"{p}messages",
            sa.Column(column, sa.Integer(), nullable=False, server_default=sa.text("0")),
        )
    _fill_counts(p)
    _refill_source_keys(p, lambda thread_id, source: key_rows(thread_id, {}, source))


def _fill_counts(p: str) -> None:
    for column, table in (
        ("attachment_count", f"{p}message_files"),
        ("reaction_count", f"{p}message_reactions"),
    ):
        rows = (
            f"FROM {table} c WHERE c.thread_id = {p}messages.thread_id "
            f"AND c.message_id = {p}messages.id"
        )
        op.execute(
            f"UPDATE {p}messages SET {column} = (SELECT COUNT(*) {rows}) "
            f"WHERE EXISTS (SELECT 1 {rows})"
        )


def _refill_source_keys(p: str, rows_of: Callable[[str, Any], list[dict[str, Any]]]) -> None:
    bind = op.get_bind()
    threads = sa.table(
        f"{p}threads",
        sa.column("id", id_type()),
        sa.column("source", JSONText()),
    )
    keys = sa.table(
        f"{p}thread_keys",
        sa.column("thread_id", id_type()),
        sa.column("digest", ascii_type(64)),
        sa.column("kind", ascii_type(16)),
        sa.column("key", sa.Text()),
        sa.column("value", sa.Text()),
    )
    last = ""
    while True:
        page = bind.execute(
            sa.select(threads.c.id, threads.c.source)
            .where(threads.c.id > last, threads.c.source.is_not(None))
            .order_by(threads.c.id)
            .limit(_BATCH)
        ).all()
        if not page:
            return
        ids = [t.id for t in page]
        bind.execute(keys.delete().where(keys.c.kind == SOURCE, keys.c.thread_id.in_(ids)))
        rows = [row for t in page for row in rows_of(t.id, t.source)]
        if rows:
            bind.execute(keys.insert(), rows)
        last = page[-1].id


def _r0002_source_rows(thread_id: str, source: dict[str, Any]) -> list[dict[str, Any]]:
    # Before r0003, every source key's digest was that of (kind, key, value) alone.
    return [
        {
            "thread_id": thread_id,
            "digest": key_digest(SOURCE, key, value),
            "kind": SOURCE,
            "key": key,
            "value": canonical_json(value),
        }
        for key, value in source.items()
    ]


def downgrade() -> None:
    """Remove the columns; give source properties their r0002 digests back."""
    p = f"{namespace()}_"
    _refill_source_keys(p, _r0002_source_rows)
    op.drop_column(f"{p}messages", "reaction_count")
    op.drop_column(f"{p}messages", "attachment_count")
    op.drop_column(f"{p}threads", "incarnation")
