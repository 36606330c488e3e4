"""The SQL backend: PostgreSQL (asyncpg, psycopg), SQLite (aiosqlite) and MariaDB/MySQL (asyncmy)
on SQLAlchemy 2 async Core, with Alembic migrations shipped in the package.

Importing this package imports no driver; :mod:`tyler_sql.backend` holds
:class:`~tyler_sql.backend.SQLBackend` and :mod:`tyler_sql.migrate` the schema upgrade that
``tyler-store migrate`` runs.
"""
