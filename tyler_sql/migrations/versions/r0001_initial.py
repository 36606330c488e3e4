"""Tyler's tables: threads, messages, message_files, message_reactions.

Revision ID: r0001
Revises:
Create Date: 2026-11-26

The first released schema: no lookup table, no full-text search (see r0002).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tyler_sql.migrations.env_helpers import namespace
from tyler_sql.schema import JSONText, LongText, UTCDateTime, ascii_type, id_type

revision: str = "r0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create the four tables of ``namespace()``."""
    p = f"{namespace()}_"
    op.create_table(
        f"{p}threads",
        sa.Column("id", id_type(), primary_key=True),
        sa.Column("title", LongText, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("attributes", JSONText(), nullable=False),
        sa.Column("source", JSONText(), nullable=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    op.create_table(
        f"{p}messages",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("thread_id", id_type(), nullable=False),
        sa.Column("id", id_type(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("role", ascii_type(16), nullable=False),
        sa.Column("content", JSONText(), nullable=True),
        sa.Column("name", LongText, nullable=True),
        sa.Column("tool_call_id", LongText, nullable=True),
        sa.Column("tool_calls", JSONText(), nullable=True),
        sa.Column("attributes", JSONText(), nullable=False),
        sa.Column("timestamp", UTCDateTime(), nullable=False),
        sa.Column("source", JSONText(), nullable=True),
        sa.Column("metrics", JSONText(), nullable=False),
        sa.ForeignKeyConstraint(
            ["thread_id"], [f"{p}threads.id"], ondelete="CASCADE", name=f"fk_{p}messages_thread"
        ),
        sa.UniqueConstraint("thread_id", "id", name=f"uq_{p}messages_id"),
        sa.UniqueConstraint("thread_id", "sequence", name=f"uq_{p}messages_sequence"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    for table, what, columns in (
        (
            "message_files",
            "files",
            [
                sa.Column("filename", LongText, nullable=False),
                sa.Column("mime_type", LongText, nullable=True),
                sa.Column("file_id", LongText, nullable=True),
                sa.Column("storage_path", LongText, nullable=True),
                sa.Column("storage_backend", LongText, nullable=True),
                sa.Column("status", ascii_type(16), nullable=False),
                sa.Column("size", sa.BigInteger(), nullable=True),
                sa.Column("attributes", JSONText(), nullable=False),
            ],
        ),
        (
            "message_reactions",
            "reactions",
            [
                sa.Column("emoji", LongText, nullable=False),
                sa.Column("user_id", LongText, nullable=False),
            ],
        ),
    ):
        op.create_table(
            f"{p}{table}",
            sa.Column("thread_id", id_type(), nullable=False),
            sa.Column("message_id", id_type(), nullable=False),
            sa.Column("position", sa.Integer(), nullable=False),
            *columns,
            sa.PrimaryKeyConstraint("thread_id", "message_id", "position"),
            sa.ForeignKeyConstraint(
                ["thread_id", "message_id"],
                [f"{p}messages.thread_id", f"{p}messages.id"],
                ondelete="CASCADE",
                name=f"fk_{p}{what}_message",
            ),
            mysql_engine="InnoDB",
            mysql_charset="utf8mb4",
        )


def downgrade() -> None:
    """Drop the tables of ``namespace()``."""
    p = f"{namespace()}_"
    for table in ("message_reactions", "message_files", "messages", "threads"):
        op.drop_table(f"{p}{table}")
