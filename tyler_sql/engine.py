"""The SQLAlchemy engine behind a store URL: driver defaults, pool options, SQLite pragmas.

Tyler's URLs name a database (``postgres://``, ``sqlite://``, ``mysql://``) where SQLAlchemy needs
a driver, so the bare schemes and aliases become the default driver before SQLAlchemy parses them.
"""

from __future__ import annotations

import contextlib
import math
import time
import weakref
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from tyler_core.errors import BackendNotFoundError
from tyler_core.settings import StoreOptions
from tyler_core.urls import mask_url, mask_urls_in

__all__ = [
    "STATEMENT_OPTION",
    "WRITE_OPTION",
    "Trust",
    "build_engine",
    "is_memory",
    "returned",
    "sqlalchemy_url",
    "trusting_checkout",
]

_DEFAULT_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "mysql": "mysql+asyncmy",
    "mariadb": "mariadb+asyncmy",
}
_SUPPORTED = {
    "sqlite+aiosqlite",
    "postgresql+asyncpg",
    "postgresql+psycopg",
    "mysql+asyncmy",
    "mariadb+asyncmy",
}

#: Execution option that marks a connection as a writer (SQLite: ``BEGIN IMMEDIATE``).
WRITE_OPTION = "tyler_write"
#: Execution option that marks a connection as running single statements, each its own
#: snapshot (SQLite: no ``BEGIN``; PostgreSQL gets ``AUTOCOMMIT`` instead).
STATEMENT_OPTION = "tyler_statement"

# SQLite waits this long for another writer's lock before it gives up with "database is locked".
_BUSY_TIMEOUT_MS = 60_000

# A connection a fast save or a driver-sent read returned less than this many seconds ago, and
# that its driver knows to be open, is lent to the next one without the pool's ping (see
# trusting_checkout).
_TRUSTED_IDLE = 5.0
_TRUSTING: ContextVar[Trust | None] = ContextVar("tyler_trusting_checkout", default=None)
# Driver connection -> time.monotonic() when a fast save or read last returned it to the pool.
_RETURNED: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()


class Trust:
    """What the pool did in a :func:`trusting_checkout`."""

    __slots__ = ("skipped",)

    def __init__(self) -> None:
        #: Whether the connection it lent went out without its ping.
        self.skipped = False


def sqlalchemy_url(url: str) -> URL:
    """The SQLAlchemy URL for a store URL, with the default driver filled in.

    Raises:
        ValueError: the scheme names a driver this backend does not support.
        BackendNotFoundError: the rest of the URL does not parse (a port that is not a number,
            say).
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        raise ValueError(f"not a SQL store URL: {mask_url(url)!r}")
    scheme = _DEFAULT_DRIVERS.get(scheme.lower(), scheme.lower())
    if scheme not in _SUPPORTED:
        supported = ", ".join(sorted(_SUPPORTED))
        raise ValueError(f"the SQL backend does not support {scheme!r} (it supports {supported})")
    try:
        parsed = make_url(f"{scheme}://{rest}")
    except (ArgumentError, ValueError) as exc:
        # The parser's message may quote the URL, password included: mask it, drop the cause.
        raise BackendNotFoundError(
            f"malformed store URL {mask_url(url)!r}: {mask_urls_in(str(exc))}"
        ) from None
    if parsed.get_backend_name() in ("mysql", "mariadb") and "charset" not in parsed.query:
        # Four-byte characters (emoji) need utf8mb4 on the connection, not just in the tables.
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed


def is_memory(url: URL) -> bool:
    """Whether ``url`` is a private in-memory SQLite database."""
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def _connect_args(url: URL, timeout: float) -> dict[str, Any]:
    driver = url.get_driver_name()
    if driver == "asyncpg":
        return {"timeout": timeout}
    if driver == "psycopg":
        return {"connect_timeout": max(2, math.ceil(timeout))}  # libpq: whole seconds, >= 2
    if driver == "asyncmy":
        return {"connect_timeout": max(1, math.ceil(timeout))}
    return {}


def build_engine(url: URL, options: StoreOptions) -> AsyncEngine:
    """An engine for ``url`` (no connection yet) with the store's pool options."""
    kwargs: dict[str, Any] = {
        # A SQLite connection is a file handle in this process, with no server to drop it: a
        # ping before each use would cost three round trips to its worker thread for nothing.
        "pool_pre_ping": url.get_backend_name() != "sqlite",
        "connect_args": _connect_args(url, options.connect_timeout),
    }
    if is_memory(url):
        # One connection for the life of the store: a second one would be another database.
        kwargs["poolclass"] = StaticPool
    else:
        pool = {
            "pool_size": options.pool_size,
            "max_overflow": options.max_overflow,
            "pool_timeout": options.pool_timeout,
            "pool_recycle": options.pool_recycle,
        }
        kwargs.update({name: value for name, value in pool.items() if value is not None})
    engine = create_async_engine(url, **kwargs)
    if url.get_driver_name() == "asyncpg":
        _configure_asyncpg(engine)
    if url.get_backend_name() == "sqlite":
        _configure_sqlite(engine, memory=is_memory(url))
    elif url.get_backend_name() in ("mysql", "mariadb"):
        _configure_mysql(engine)
    return engine


@contextlib.contextmanager
def trusting_checkout() -> Iterator[Trust]:
    """Within it, the pool's pre-ping (asyncpg, asyncmy) skips its round trip for a connection
    that a fast save (:mod:`tyler_sql.fastwrite`) or a read sent on the driver
    (:mod:`tyler_sql.driverfetch`) returned less than a few seconds ago and that its driver
    knows to be open; the :class:`Trust` it gives says whether it did.

    A connection the server closed (restart, ``pg_terminate_backend``, ``KILL``, idle
    timeout) is known closed as soon as the event loop has seen its socket close, and is
    pinged, found dead and replaced as before. What the ping still catches beyond that, a
    connection that died in the last instant or silently, then fails the statement that uses
    it instead, and is invalidated, not returned. A save's caller gets the error, no
    acknowledgement (the store never retries a write); each fast save is one transaction of
    its own, so such a failure leaves the old thread or, if the server committed before the
    connection broke, the new one; never a mix. A read, which changes nothing, is sent once
    more on a connection the pool pinged (or opened), so that its caller sees no error.
    """
    trust = Trust()
    token = _TRUSTING.set(trust)
    try:
        yield trust
    finally:
        _TRUSTING.reset(token)


def returned(driver_connection: Any) -> None:
    """Note that a fast save or a read returned ``driver_connection`` to the pool in good
    order."""
    _RETURNED[driver_connection] = time.monotonic()


def _trusted(dbapi_connection: Any) -> bool:
    # Whether a pre-ping may skip its round trip (see trusting_checkout).
    trust = _TRUSTING.get()
    if trust is None:
        return False
    driver = dbapi_connection.driver_connection
    at = _RETURNED.get(driver)
    if at is None or time.monotonic() - at > _TRUSTED_IDLE:
        return False
    if hasattr(driver, "is_closed"):  # asyncpg
        known_open = not driver.is_closed()
    else:  # asyncmy: the socket's end (EOF or error) seen by its protocol.
        known_open = bool(driver.connected) and getattr(driver, "_stream_broken", True) is False
    trust.skipped = known_open
    return known_open


def _configure_asyncpg(engine: AsyncEngine) -> None:
    """The pool's pre-ping in one round trip, or none for a trusted checkout.

    SQLAlchemy's asyncpg ping opens a transaction around its query and rolls it back (for
    pgbouncer's transaction mode): three round trips before every operation, more than a save
    itself needs. This ping sends the empty query alone; on any error SQLAlchemy's own ping
    runs, which translates the error and tells a dead connection (replaced) from a live one.
    """
    dialect = engine.sync_engine.dialect
    fallback = dialect.do_ping

    def do_ping(dbapi_connection: Any) -> bool:
        if _trusted(dbapi_connection):
            return True
        try:
            dbapi_connection.run_async(lambda connection: connection.fetchrow(";"))
        except Exception:
            return fallback(dbapi_connection)
        return True

    dialect.do_ping = do_ping  # type: ignore[method-assign]


def _configure_mysql(engine: AsyncEngine) -> None:
    """Writers run at READ COMMITTED (no gap locks between writers; every writer locks the
    thread row first anyway), set by the first statement of each write transaction.

    Not through the ``isolation_level`` execution option: SQLAlchemy sends that ``SET SESSION``
    when a connection is checked out, outside its error handling, so a connection that died in
    the pool just then was never returned to it (one leaked connection per such fault, until
    the pool ran dry). Here a failure is an ordinary statement error: the connection is
    invalidated and returned.

    The pool's pre-ping skips its round trip for a trusted checkout (see trusting_checkout).
    """
    dialect = engine.sync_engine.dialect
    fallback = dialect.do_ping

    def do_ping(dbapi_connection: Any) -> bool:
        return _trusted(dbapi_connection) or fallback(dbapi_connection)

    dialect.do_ping = do_ping  # type: ignore[method-assign]

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get(WRITE_OPTION, False):
            # Applies to the transaction this begins (the DBAPI starts it with the next
            # statement), not to the session: readers keep REPEATABLE READ's one snapshot.
            connection.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")


# How long a connection to a new SQLite file tries to switch it to WAL while others do too.
_WAL_TRIES = 100
_WAL_PAUSE = 0.01


def _use_wal(cursor: Any) -> None:
    """Put the database file in WAL mode (a property of the file, kept once set).

    Switching takes an exclusive lock, and SQLite refuses it at once, without waiting for the
    busy timeout ("database is locked"), to a connection that races another one to it: several
    stores opening a new file together. Whichever wins switches the file for all; the others
    find it switched, or try again a moment later.
    """
    for _ in range(_WAL_TRIES):
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except Exception as error:  # the driver's OperationalError, as SQLAlchemy adapts it
            if "database is locked" not in str(error):
                raise
        cursor.execute("PRAGMA journal_mode")
        row = cursor.fetchone()
        if row is not None and str(row[0]).lower() == "wal":
            return
        time.sleep(_WAL_PAUSE)  # rare: only while connections race to a new file
    cursor.execute("PRAGMA journal_mode = WAL")


def _configure_sqlite(engine: AsyncEngine, *, memory: bool) -> None:
    """SQLAlchemy's recipe for real SQLite transactions: the driver emits no BEGIN, we do."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if not memory:
                _use_wal(cursor)
                cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # A deferred transaction that later writes fails with SQLITE_BUSY at once instead of
        # waiting, so writers take the lock up front; readers get a consistent WAL snapshot.
        options = connection.get_execution_options()
        if options.get(STATEMENT_OPTION, False):
            return  # the driver's autocommit: each statement reads its own snapshot
        connection.exec_driver_sql("BEGIN IMMEDIATE" if options.get(WRITE_OPTION) else "BEGIN")
