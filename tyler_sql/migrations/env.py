"""Alembic's environment: runs on the connection :mod:`tyler_sql.migrate` hands over."""

from __future__ import annotations

from alembic import context

from tyler_sql.schema import build_tables, include_name

_config = context.config
_connection = _config.attributes["connection"]
_namespace: str = _config.attributes["namespace"]
_tables = build_tables(_namespace)

context.configure(
    connection=_connection,
    target_metadata=_tables.metadata,
    version_table=_tables.version_table,
    include_name=include_name(_namespace),
    tyler_namespace=_namespace,  # env_helpers.NAMESPACE_OPTION: what revision scripts read
)
with context.begin_transaction():
    context.run_migrations()
