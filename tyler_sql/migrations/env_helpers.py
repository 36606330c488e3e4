"""What revision scripts read from the running migration."""

from __future__ import annotations

from alembic import op

__all__ = ["NAMESPACE_OPTION", "dialect_name", "namespace"]

#: The key of the namespace among the migration context's options.
NAMESPACE_OPTION = "tyler_namespace"


def namespace() -> str:
    """The namespace being migrated: the prefix of every table name."""
    value = op.get_context().opts[NAMESPACE_OPTION]
    assert isinstance(value, str)
    return value


def dialect_name() -> str:
    """``postgresql``, ``sqlite``, ``mysql`` or ``mariadb``."""
    return str(op.get_bind().dialect.name)
