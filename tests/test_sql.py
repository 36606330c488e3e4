"""The SQL backend: the conformance suite on PostgreSQL (asyncpg, psycopg), MariaDB (asyncmy) and
SQLite (file, memory), plus what only the SQL backend has to prove: per-save statement counts,
atomic saves that fail half-way, connection failures, URL schemes, pool and SQLite settings."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.services import service_url
from tyler_core.errors import BackendError, BackendNotFoundError, StoreConnectionError
from tyler_core.models import Attachment, Message, Thread
from tyler_core.registry import resolve_backend
from tyler_core.store import Clock, ThreadStore
from tyler_core.testing import ThreadStoreConformance
from tyler_core.testing.base import fresh_namespace
from tyler_sql.backend import SQLBackend
from tyler_sql.driverfetch import DriverFetch
from tyler_sql.engine import _use_wal, sqlalchemy_url
from tyler_sql.migrate import drop_namespace
from tyler_sql.pages import PageReader
from tyler_sql.schema import build_tables


def psycopg_url() -> str:
    """The PostgreSQL test server through psycopg instead of asyncpg."""
    _, _, rest = service_url("postgres").partition("://")
    return f"postgresql+psycopg://{rest}"


def _drop(connection: Any, namespace: str) -> None:
    drop_namespace(connection, namespace)


async def drop_namespaces(url: str, namespaces: list[str]) -> None:
    """Drop the tables of ``namespaces`` (through the migrations' downgrades), so the shared test
    databases do not fill up with one schema per test."""
    store = ThreadStore(url)
    backend = store.backend
    assert isinstance(backend, SQLBackend)
    try:
        for namespace in namespaces:
            async with backend.writer() as connection:
                await connection.run_sync(_drop, namespace)
    finally:
        await store.close()


class _ServerConformance(ThreadStoreConformance):
    """Opens stores on a server URL and drops their namespaces after each test."""

    def server_url(self) -> str:
        raise NotImplementedError

    async def open_store(self, namespace: str, *, clock: Clock | None = None) -> ThreadStore:
        self._namespaces.append(namespace)
        return await ThreadStore.create(self.server_url(), namespace=namespace, clock=clock)

    @pytest_asyncio.fixture(autouse=True, loop_scope="function")
    async def _drop_namespaces(self) -> AsyncIterator[None]:
        self._namespaces: list[str] = []
        yield
        if self._namespaces:
            await drop_namespaces(self.server_url(), sorted(set(self._namespaces)))


class TestPostgresAsyncpgConformance(_ServerConformance):
    """The whole contract on PostgreSQL through asyncpg."""

    def server_url(self) -> str:
        return service_url("postgres")


class TestPostgresPsycopgConformance(_ServerConformance):
    """The whole contract on PostgreSQL through psycopg."""

    def server_url(self) -> str:
        return psycopg_url()


class TestMariaDBConformance(_ServerConformance):
    """The whole contract on MariaDB through asyncmy."""

    def server_url(self) -> str:
        return service_url("mysql")


class TestSQLiteFileConformance(ThreadStoreConformance):
    """The whole contract on a SQLite file (one per test)."""

    @pytest.fixture(autouse=True)
    def _database(self, tmp_path: Path) -> None:
        self._url = f"sqlite+aiosqlite:///{tmp_path / 'threads.db'}"

    async def open_store(self, namespace: str, *, clock: Clock | None = None) -> ThreadStore:
        return await ThreadStore.create(self._url, namespace=namespace, clock=clock)


class TestSQLiteMemoryConformance(ThreadStoreConformance):
    """The whole contract on ``:memory:`` SQLite: private to each store."""

    url = "sqlite+aiosqlite:///:memory:"


# -- backend-only tests ------------------------------------------------------------------------


DIALECTS = ["postgres_asyncpg", "postgres_psycopg", "mariadb", "sqlite_file", "sqlite_memory"]


@pytest.fixture(params=DIALECTS)
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One URL per dialect and driver."""
    return dialect_url(request.param, tmp_path)


def dialect_url(name: str, tmp_path: Path) -> str:
    """The URL of one of :data:`DIALECTS` (a SQLite file goes in ``tmp_path``)."""
    if name == "postgres_asyncpg":
        return service_url("postgres")
    if name == "postgres_psycopg":
        return psycopg_url()
    if name == "mariadb":
        return service_url("mysql")
    if name == "sqlite_file":
        return f"sqlite:///{tmp_path / 'threads.db'}"
    return "sqlite://"


@contextlib.asynccontextmanager
async def fresh_store(url: str) -> AsyncIterator[ThreadStore]:
    """A store on a fresh namespace of ``url``, dropped afterwards."""
    namespace = fresh_namespace()
    store = await ThreadStore.create(url, namespace=namespace)
    try:
        yield store
    finally:
        await store.close()
        if not url.startswith("sqlite"):
            await drop_namespaces(url, [namespace])


@pytest_asyncio.fixture(loop_scope="function")
async def sql_store(sql_url: str) -> AsyncIterator[ThreadStore]:
    """A store on a fresh namespace of each dialect, dropped afterwards."""
    async with fresh_store(sql_url) as store:
        yield store


class StatementCounter:
    """Counts the statements an engine sends (SQLAlchemy's ``before_cursor_execute``), and the
    page statements sent on the driver's own connection (:mod:`tyler_sql.driverfetch`)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.statements: list[str] = []
        self._engine = engine.sync_engine
        self._rows = DriverFetch.rows

    def _record(self, *args: Any) -> None:
        self.statements.append(str(args[2]))

    def __enter__(self) -> StatementCounter:
        event.listen(self._engine, "before_cursor_execute", self._record)
        rows = self._rows

        async def counted(fetch: DriverFetch, *args: Any) -> Any:
            self.statements.append(f"(driver) {args[1]}")
            return await rows(fetch, *args)

        DriverFetch.rows = counted  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        DriverFetch.rows = self._rows  # type: ignore[method-assign]
        event.remove(self._engine, "before_cursor_execute", self._record)


def _thread_with(messages: int) -> Thread:
    thread = Thread(title="long", attributes={"k": "v"})
    for number in range(messages):
        thread.add_message(Message(role="user", content=f"message number {number}"))
    return thread


async def test_saving_one_appended_message_costs_the_same_for_10_and_1000(
    sql_store: ThreadStore,
) -> None:
    counts = []
    for size in (10, 1000):
        thread = await sql_store.save(_thread_with(size))
        thread.add_message(Message(role="assistant", content="one more"))
        with StatementCounter(sql_store.engine) as counter:
            await sql_store.save(thread)
        counts.append(len(counter.statements))
        stored = await sql_store.get(thread.id)
        assert stored is not None and len(stored.messages) == size + 1
    assert counts[0] == counts[1], counts
    assert counts[1] <= 5, counts


async def test_reading_a_page_without_attachments_or_reactions_is_one_statement(
    sql_store: ThreadStore,
) -> None:
    thread = await sql_store.save(_thread_with(3))
    await sql_store.save(Thread(id="empty", attributes={"k": "v"}))  # no messages at all
    with StatementCounter(sql_store.engine) as counter:
        got = await sql_store.get(thread.id)
        listed = await sql_store.list(limit=20)
        found = await sql_store.find_by_attributes({"k": "v"})
    assert len(counter.statements) == 3, counter.statements
    assert got is not None and [m.content for m in got.messages] == [
        m.content for m in thread.messages
    ]
    assert (
        sorted(t.id for t in listed) == sorted(t.id for t in found) == sorted([thread.id, "empty"])
    )
    assert next(t for t in listed if t.id == "empty").messages == []


async def test_a_page_mixing_attachments_reactions_and_plain_messages_reads_them_all(
    sql_store: ThreadStore,
) -> None:
    plain = await sql_store.save(_thread_with(2))
    rich = _thread_with(3)
    rich.messages[1].attachments = [
        Attachment(filename="a.txt", size=3, attributes={"n": 1e16}),
        Attachment(filename="b.png", status="stored"),
    ]
    rich.messages[2].reactions = {"👍": ["zed", "amy"], "🎉": ["amy"]}
    await sql_store.save(rich)
    with StatementCounter(sql_store.engine) as counter:
        listed = {t.id: t for t in await sql_store.list()}
    # The page statement, then the same in one snapshot with the attachment and reaction rows.
    assert 3 <= len(counter.statements) <= 6, counter.statements
    assert listed[plain.id].model_dump() == plain.model_dump()
    assert listed[rich.id].model_dump() == rich.model_dump()
    assert listed[rich.id].messages[1].attachments[0].attributes == {"n": 1e16}


async def test_a_page_of_threads_with_and_without_messages_comes_back_exact(
    sql_store: ThreadStore,
) -> None:
    rich = _thread_with(4)
    rich.messages[0].attachments = [Attachment(filename="a.txt", size=3)]
    rich.messages[3].reactions = {"👍": ["amy"]}
    saved = [
        await sql_store.save(Thread(id="empty", title="nothing yet", attributes={"k": "v"})),
        await sql_store.save(_thread_with(3)),
        await sql_store.save(_thread_with(120)),
        await sql_store.save(rich),
        await sql_store.save(Thread(attributes={"k": "v"}, source={"name": "s"})),
        await sql_store.save(_thread_with(1)),
    ]
    newest_first = sorted(saved, key=lambda t: (t.updated_at, t.id), reverse=True)
    expected = [t.model_dump() for t in newest_first]
    assert [t.model_dump() for t in await sql_store.list()] == expected
    for offset in range(len(saved)):
        page = await sql_store.list(limit=2, offset=offset)
        assert [t.model_dump() for t in page] == expected[offset : offset + 2]
    found = await sql_store.find_by_attributes({"k": "v"})
    assert [t.model_dump() for t in found] == expected
    later = await sql_store.find_by_attributes({"k": "v"}, limit=3, offset=2)
    assert [t.model_dump() for t in later] == expected[2:5]
    for thread in saved:
        got = await sql_store.get(thread.id)
        assert got is not None and got.model_dump() == thread.model_dump()


async def test_a_thread_document_is_sent_and_decoded_once_per_thread(
    sql_store: ThreadStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    thread = await sql_store.save(_thread_with(50))
    await sql_store.save(Thread(id="empty"))
    reader = PageReader(build_tables(sql_store.options.namespace), sql_store.engine.dialect.name)
    async with sql_store.engine.connect() as connection:
        rows = (await connection.execute(reader.by_id, {"b_thread_id": thread.id})).all()
    assert [row[0] is not None for row in rows] == [True] + [False] * 50
    decoded: list[Any] = []
    decode = Thread.model_validate_json

    def counted(data: Any, **options: Any) -> Thread:
        decoded.append(data)
        return decode(data, **options)

    monkeypatch.setattr(Thread, "model_validate_json", counted)
    listed = await sql_store.list()
    assert len(decoded) == 2
    assert sorted((t.id, len(t.messages)) for t in listed) == sorted(
        [(thread.id, 50), ("empty", 0)]
    )


async def test_a_page_read_failing_on_its_connection_invalidates_only_that(
    sql_url: str, sql_store: ThreadStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = sql_store.backend
    assert isinstance(backend, SQLBackend)
    fetch = backend._pages._fetch
    if fetch is None or sql_url == "sqlite://":
        pytest.skip("psycopg reads through SQLAlchemy; a private database is its connection")
    thread = await sql_store.save(_thread_with(2))
    invalidated: list[Any] = []
    event.listen(sql_store.engine.sync_engine, "invalidate", lambda *args: invalidated.append(args))
    run = fetch._run

    async def lost(driver: Any, sql: str, arguments: list[Any]) -> Any:
        raise ConnectionResetError("connection lost")

    async def refused(driver: Any, sql: str, arguments: list[Any]) -> Any:
        return await run(driver, "SELECT * FROM no_such_table_here", [])

    monkeypatch.setattr(fetch, "_run", lost)
    with pytest.raises(BackendError, match="connection lost"):
        await sql_store.get(thread.id)
    assert len(invalidated) == 1  # never back in the pool
    monkeypatch.setattr(fetch, "_run", refused)
    with pytest.raises(BackendError, match="no_such_table_here"):
        await sql_store.list()
    assert len(invalidated) == 1  # the server's error leaves the connection usable
    monkeypatch.setattr(fetch, "_run", run)
    for _ in range(3):
        got = await sql_store.get(thread.id)
        assert got is not None and got.model_dump() == thread.model_dump()


async def test_a_sequence_swap_between_changed_messages_saves(sql_store: ThreadStore) -> None:
    thread = await sql_store.save(_thread_with(3))
    first, second = thread.messages[0], thread.messages[1]
    first.sequence, second.sequence = second.sequence, first.sequence
    await sql_store.save(thread)
    stored = await sql_store.get(thread.id)
    assert stored is not None
    assert [m.id for m in stored.messages] == [second.id, first.id, thread.messages[2].id]


def _refuse_name_ddl(dialect: str, table: str) -> str:
    # A rule the models allow but this database refuses: the save fails half-way through.
    if dialect == "sqlite":
        return (
            f"CREATE TRIGGER refuse_boom BEFORE INSERT ON {table} WHEN new.name = 'boom' "
            "BEGIN SELECT RAISE(ABORT, 'no boom'); END"
        )
    return f"ALTER TABLE {table} ADD CONSTRAINT refuse_boom CHECK (name IS NULL OR name <> 'boom')"


async def test_a_save_that_fails_half_way_leaves_the_stored_thread_unchanged(
    sql_store: ThreadStore,
) -> None:
    engine: AsyncEngine = sql_store.engine
    table = f"{sql_store.options.namespace}_messages"
    async with engine.begin() as connection:
        await connection.execute(text(_refuse_name_ddl(engine.dialect.name, table)))
    thread = await sql_store.save(_thread_with(3))
    before = await sql_store.get(thread.id)
    assert before is not None
    thread.title = "changed"
    thread.attributes["k"] = "changed"
    thread.messages[0].content = "edited"
    del thread.messages[1]
    thread.add_message(Message(role="user", content="fine"))
    thread.add_message(Message(role="user", content="refused", name="boom"))
    with pytest.raises(Exception, match="boom"):
        await sql_store.save(thread)
    after = await sql_store.get(thread.id)
    assert after is not None
    assert after.model_dump() == before.model_dump()
    assert await sql_store.find_by_attributes({"k": "v"}) != []
    assert await sql_store.find_by_attributes({"k": "changed"}) == []


async def test_lookups_and_search_survive_keys_longer_than_an_index_allows(
    sql_store: ThreadStore,
) -> None:
    long_key = "k" * 2000
    long_value = {"text": "v" * 5000, "n": [1, 2, 3]}
    thread = Thread(attributes={long_key: long_value}, source={"name": "n" * 1000})
    thread.add_message(Message(role="user", content="needle " + "w" * 3000))
    await sql_store.save(thread)
    assert [t.id for t in await sql_store.find_by_attributes({long_key: long_value})] == [thread.id]
    assert [t.id for t in await sql_store.find_by_source("n" * 1000)] == [thread.id]
    threads, total = await sql_store.search_threads("needle")
    assert total == 1 and [t.id for t in threads] == [thread.id]


SEARCH_TEXTS = ["the 10 apples", "about this thing", "foo_bar baz", "résumé here", "a b c"]
SEARCH_QUERIES = ["10", "about", "foo_bar", "foo", "resume", "Résumé", "apples", "a", "the APPLES"]


async def test_search_finds_exactly_what_the_memory_backend_finds(sql_store: ThreadStore) -> None:
    # Short words, stopwords, accents and underscores: where the engines differ by themselves.
    async with await ThreadStore.create("memory://") as memory:
        for number, content in enumerate(SEARCH_TEXTS):
            for store in (sql_store, memory):
                thread = Thread(id=f"t{number}")
                thread.add_message(Message(role="user", content=content))
                await store.save(thread)
        for query in SEARCH_QUERIES:
            found, total = await sql_store.search_threads(query)
            expected, expected_total = await memory.search_threads(query)
            assert ([t.id for t in found], total) == ([t.id for t in expected], expected_total), (
                query
            )


async def test_ids_that_differ_only_in_trailing_spaces_or_case_are_distinct(
    sql_store: ThreadStore,
) -> None:
    ids = ["a", "a ", "A", "a  "]
    for thread_id in ids:
        await sql_store.save(Thread(id=thread_id, title=repr(thread_id)))
    for thread_id in ids:
        stored = await sql_store.get(thread_id)
        assert stored is not None and stored.title == repr(thread_id)
    assert sorted(t.id for t in await sql_store.list()) == sorted(ids)


# -- URLs, engine, pool, SQLite settings -------------------------------------------------------

SCHEMES = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+psycopg",
    "mysql": "mysql+asyncmy",
    "mysql+asyncmy": "mysql+asyncmy",
    "mariadb": "mariadb+asyncmy",
    "mariadb+asyncmy": "mariadb+asyncmy",
}


@pytest.mark.parametrize(("scheme", "driver"), SCHEMES.items())
async def test_every_scheme_reaches_its_driver_without_connecting(scheme: str, driver: str) -> None:
    url = f"{scheme}://user:pw@127.0.0.1:1/db" if "sqlite" not in scheme else f"{scheme}:///x.db"
    assert resolve_backend(url) is SQLBackend
    store = ThreadStore(url)
    try:
        assert isinstance(store.engine, AsyncEngine)
        assert store.engine.url.drivername == driver
    finally:
        await store.close()


def test_an_unsupported_driver_is_refused() -> None:
    with pytest.raises(ValueError, match="does not support"):
        sqlalchemy_url("postgresql+pg8000://u@h/db")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://u:hunter2@127.0.0.1:abc/test",
        "mysql+asyncmy://root:hunter2@127.0.0.1:5x/test",
        "postgresql+asyncpg://u:hunter2@[::1/test",
    ],
    ids=["port-not-a-number", "port-with-a-letter", "unclosed-ipv6-bracket"],
)
def test_a_malformed_sql_url_is_refused_with_the_password_masked(url: str) -> None:
    with pytest.raises(BackendNotFoundError, match="malformed store URL") as caught:
        ThreadStore(url)
    assert "hunter2" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


async def test_pool_options_reach_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TYLER_DB_POOL_SIZE", "3")
    monkeypatch.setenv("TYLER_DB_POOL_RECYCLE", "99")
    store = ThreadStore("postgresql://u@127.0.0.1:1/db?max_overflow=4", pool_timeout=7)
    try:
        pool: Any = store.engine.pool
        assert (pool.size(), pool._max_overflow, pool._timeout, pool._recycle) == (3, 4, 7, 99)
        assert pool._pre_ping is True
    finally:
        await store.close()


async def test_sqlite_file_runs_wal_with_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    async with await ThreadStore.create(f"sqlite:///{tmp_path / 'x.db'}") as store:
        assert store.capabilities.shared_across_instances
        async with store.engine.connect() as connection:
            pragmas = [
                (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "foreign_keys", "busy_timeout")
            ]
        assert pragmas[0] == "wal"
        assert pragmas[1] == 1
        assert pragmas[2] >= 1000


def trace_sqlite(engine: AsyncEngine) -> list[str]:
    """Every statement SQLite runs on ``engine``'s connections opened from now on, as SQLite
    reports it: SQLAlchemy's and those the fast saves send on the driver's connection."""
    statements: list[str] = []

    def trace(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.run_async(lambda driver: driver.set_trace_callback(statements.append))

    event.listen(engine.sync_engine, "connect", trace)
    return statements


@pytest.mark.parametrize("saved", ["new", "appended", "changed"])
async def test_sqlite_writes_begin_immediate(tmp_path: Path, saved: str) -> None:
    store = ThreadStore(f"sqlite:///{tmp_path / 'x.db'}")
    statements = trace_sqlite(store.engine)
    async with store:
        thread = Thread(title="a")
        if saved != "new":
            await store.save(thread)
            thread.add_message(Message(role="user", content="more"))
            if saved == "changed":
                thread.title = "b"
        statements.clear()
        await store.save(thread)
        assert statements[0] == "BEGIN IMMEDIATE"
        assert statements[-1] == "COMMIT"


async def test_sqlite_memory_is_private_to_its_store() -> None:
    async with (
        await ThreadStore.create(":memory:") as first,
        await ThreadStore.create(":memory:") as second,
    ):
        assert not first.capabilities.shared_across_instances
        await first.save(Thread(id="only-here"))
        assert await second.get("only-here") is None
        assert await first.get("only-here") is not None


def test_shared_across_instances_is_declared_for_servers() -> None:
    for url in ("postgresql://u@h/db", "mysql://u@h/db", "sqlite:///f.db"):
        assert ThreadStore(url).capabilities.shared_across_instances


# -- connection failures -------------------------------------------------------------------------


def _failures() -> Iterator[tuple[str, Callable[[], str]]]:
    def pg(path: str, host: str = "127.0.0.1") -> Callable[[], str]:
        def url() -> str:
            service_url("postgres")  # skip without a server
            return f"postgresql+asyncpg://nobody:s3cr3tpw@{host}/{path}"

        return url

    def my(userinfo: str, path: str, host: str = "127.0.0.1") -> Callable[[], str]:
        def url() -> str:
            service_url("mysql")
            return f"mysql+asyncmy://{userinfo}@{host}/{path}"

        return url

    yield "postgres unreachable", pg("test", "127.0.0.1:1")
    yield "postgres unknown role", pg("test")
    yield (
        "postgres missing database",
        lambda: (
            service_url("postgres").replace("postgres@", "postgres:s3cr3tpw@").rsplit("/", 1)[0]
            + "/no_such_database_here"
        ),
    )
    yield "mariadb unreachable", my("root:s3cr3tpw", "test", "127.0.0.1:1")
    yield "mariadb wrong password", my("root:s3cr3tpw", "test")
    yield "mariadb missing database", my("root", "no_such_database_here")
    yield "sqlite missing directory", lambda: "sqlite:////no/such/dir/s3cr3tpw.db"


@pytest.mark.parametrize("url_of", [f for _, f in _failures()], ids=[n for n, _ in _failures()])
async def test_connection_failures_raise_store_connection_error_masked(
    url_of: Callable[[], str],
) -> None:
    url = url_of()
    with pytest.raises(StoreConnectionError) as caught:
        await asyncio.wait_for(ThreadStore.create(url, connect_timeout=5), timeout=30)
    # After a failed connect, aiosqlite's worker thread still reports its shutdown to this
    # loop: let it finish while the loop runs, or it fails in the next test.
    for worker in threading.enumerate():
        if "_connection_worker_thread" in worker.name:
            await asyncio.to_thread(worker.join, 10)
    if "s3cr3tpw@" in url:
        assert "s3cr3tpw" not in str(caught.value)
        assert "***" in str(caught.value)
    assert caught.value.__cause__ is None or "s3cr3tpw" not in str(caught.value.__cause__)


async def test_a_version_0_thread_deleted_since_loading_is_saved_whole(
    sql_store: ThreadStore,
) -> None:
    # preserve=True may store version 0, which the contract treats like "not stored".
    thread = _thread_with(3)
    await sql_store.save(thread, preserve=True)
    loaded = await sql_store.get(thread.id)
    assert loaded is not None and loaded.version == 0
    assert await sql_store.delete(thread.id)
    loaded.add_message(Message(role="user", content="after the delete"))
    await sql_store.save(loaded)
    stored = await sql_store.get(thread.id)
    assert stored is not None
    assert [m.content for m in stored.messages] == [m.content for m in loaded.messages]
    assert await sql_store.find_by_attributes({"k": "v"}) != []


async def _open_at_once_and_share(url: str, count: int, **options: Any) -> None:
    """Open ``count`` stores on ``url`` at once; each must see what one of them saved."""
    stores = await asyncio.gather(*(ThreadStore.create(url, **options) for _ in range(count)))
    try:
        await stores[0].save(Thread(id="seen"))
        assert all([await store.get("seen") is not None for store in stores])
    finally:
        for store in stores:
            await store.close()


async def test_stores_opening_one_new_sqlite_file_at_once_all_open(tmp_path: Path) -> None:
    # Each new connection switches the file to WAL; racing ones are refused that switch at once
    # ("database is locked", without the busy timeout) and must find it done or try again.
    for round_number in range(10):
        await _open_at_once_and_share(f"sqlite:///{tmp_path}/new{round_number}.db", 8)


def test_a_connection_refused_the_switch_to_wal_finds_it_done_or_tries_again() -> None:
    class Cursor:
        """A connection that loses the race twice, then finds the file switched."""

        def __init__(self) -> None:
            self.statements: list[str] = []
            self.mode = "delete"

        def execute(self, sql: str) -> None:
            self.statements.append(sql)
            if sql == "PRAGMA journal_mode = WAL":
                raise RuntimeError("(sqlite3.OperationalError) database is locked")
            if len(self.statements) == 4:
                self.mode = "wal"  # the winner switched it meanwhile

        def fetchone(self) -> tuple[str]:
            return (self.mode,)

    cursor = Cursor()
    _use_wal(cursor)
    assert cursor.statements == [
        "PRAGMA journal_mode = WAL",
        "PRAGMA journal_mode",
        "PRAGMA journal_mode = WAL",
        "PRAGMA journal_mode",
    ]

    class Broken(Cursor):
        def execute(self, sql: str) -> None:
            raise RuntimeError("disk I/O error")

    with pytest.raises(RuntimeError, match="disk I/O"):
        _use_wal(Broken())


async def test_stores_opening_a_new_namespace_at_once_create_its_schema_once(
    sql_url: str,
) -> None:
    if sql_url == "sqlite://":
        pytest.skip("an in-memory database belongs to one store")
    namespace = fresh_namespace()
    try:
        await _open_at_once_and_share(sql_url, 4, namespace=namespace)
    finally:
        if not sql_url.startswith("sqlite"):
            await drop_namespaces(sql_url, [namespace])
