"""Alembic migrations of the SQL schema, run by :mod:`tyler_sql.migrate` (no ``alembic.ini``)."""
