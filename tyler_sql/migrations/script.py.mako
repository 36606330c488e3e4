"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

Table names carry the namespace: read it with ``namespace()`` and never hard-code a prefix.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}
from tyler_sql.migrations.env_helpers import namespace

revision: str = ${repr(up_revision)}
down_revision: str | None = ${repr(down_revision)}
branch_labels: str | None = ${repr(branch_labels)}
depends_on: str | None = ${repr(depends_on)}


def upgrade() -> None:
    """Upgrade the schema of ``namespace()``."""
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    """Downgrade the schema of ``namespace()``."""
    ${downgrades if downgrades else "pass"}
