"""Alembic revisions, oldest first: ``r0001`` (Tyler's tables), ``r0002`` (lookups, search)."""
