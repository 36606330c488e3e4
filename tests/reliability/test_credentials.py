"""Credentials never leak: a password in a store URL appears in no log record (any logger, any
level), repr, exception message (whole ``__cause__``/``__context__`` chains included), CLI output
or test id, whether the store works, fails to connect or loses its server."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import shutil
import socket
import subprocess
import traceback
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
from sqlalchemy import text

from tests.services import service_url
from tyler_core import cli
from tyler_core.errors import ConcurrencyError, ThreadNotFoundError, TylerStoreError
from tyler_core.models import Message, Thread
from tyler_core.store import ThreadStore
from tyler_core.testing.base import fresh_namespace

#: The password the tests put in URLs; ``MARK`` is the part no output may contain. Its ``@``,
#: ``:`` and ``/`` must be percent-encoded in a URL, so both forms are checked.
PASSWORD = "p@ss:Sekr1t/7f3k w"
MARK = "Sekr1t"
QUOTED = quote(PASSWORD, safe="")
_URL_WITH_PASSWORD = re.compile(r"://[^/\s@]*:[^@/\s]+@")


class Capture(logging.Handler):
    """Every record emitted anywhere while installed, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))
        self.texts.append(repr(record.args))


@pytest.fixture
def logs() -> Iterator[Capture]:
    """A handler on the root logger at DEBUG (and every logger let through at DEBUG)."""
    root = logging.getLogger()
    capture = Capture()
    level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    yield capture
    root.removeHandler(capture)
    root.setLevel(level)


def exception_texts(exc: BaseException) -> list[str]:
    """str, repr and formatted traceback of an exception and of everything in its chains."""
    texts: list[str] = []
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current), "".join(traceback.format_exception(current))]
        texts += [str(arg) for arg in current.args]
        pending += [current.__cause__, current.__context__]
    return texts


def assert_no_password(texts: list[str], where: str) -> None:
    for item in texts:
        assert MARK not in item, f"the password leaked into {where}: {item[:500]}"
        assert QUOTED not in item, f"the password leaked into {where}: {item[:500]}"


@dataclass
class Seen:
    """Everything a test showed: reprs and exceptions (logs come from the fixture)."""

    texts: list[str] = field(default_factory=list)
    errors: int = 0

    def error(self, exc: BaseException) -> None:
        self.errors += 1
        self.texts += exception_texts(exc)


async def _use(store: ThreadStore, seen: Seen) -> None:
    """Every kind of operation and the errors users meet in normal work."""
    seen.texts += [repr(store), str(store), repr(store.backend), repr(store.options)]
    if store.engine is not None:
        seen.texts += [repr(store.engine), str(store.engine.url)]
    thread = await store.save(Thread(id="t", attributes={"k": 1}, source={"name": "s"}))
    await store.append("t", Message(role="user", content="hello world"))
    assert (await store.get("t")) is not None
    await store.list()
    await store.find_by_attributes({"k": 1})
    await store.find_by_source("s")
    await store.count()
    try:
        await store.save(thread)  # stale since the append
    except ConcurrencyError as exc:
        seen.error(exc)
    try:
        await store.append("missing", Message(role="user", content="x"))
    except ThreadNotFoundError as exc:
        seen.error(exc)
    await store.delete("t")


async def _fail_to_open(url: str, seen: Seen) -> None:
    store = ThreadStore(url, connect_timeout=5)
    seen.texts += [repr(store)]
    with pytest.raises(TylerStoreError) as caught:
        await store.initialize()
    seen.error(caught.value)
    await store.close()


def _with_password(url: str, user: str, password: str = QUOTED, port: int | None = None) -> str:
    parts = urlsplit(url)
    port = port or parts.port
    host = f"{parts.hostname}:{port}" if port else str(parts.hostname)
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


# -- PostgreSQL: trust auth accepts any password ---------------------------------------------------


async def test_postgres_password_never_shows(logs: Capture) -> None:
    seen = Seen()
    url = _with_password(service_url("postgres"), "postgres")
    namespace = fresh_namespace()
    store = await ThreadStore.create(url, namespace=namespace)
    try:
        await _use(store, seen)
        # A driver error on a working store: its namespace's tables vanish underneath it.
        await store.backend.drop()
        with pytest.raises(TylerStoreError) as caught:
            await store.count()
        seen.error(caught.value)
    finally:
        await store.close()
    await _fail_to_open(_with_password(url, "postgres", port=1), seen)
    await _fail_to_open(_with_password(url, "nosuchrole"), seen)
    assert seen.errors >= 5
    assert any("postgres:***@" in item for item in seen.texts)  # shown, masked
    assert_no_password(seen.texts, "a repr or an exception")
    assert_no_password(logs.texts, "a log record")
    assert logs.texts, "nothing was logged: is the capture installed?"


# -- MariaDB: a user with a password, created and dropped here -------------------------------------


@pytest.fixture
async def mariadb_user() -> AsyncIterator[str]:
    """A MariaDB user whose password is :data:`PASSWORD`, allowed on the test database."""
    root_url = service_url("mysql")
    user = f"tyler_cred_{uuid.uuid4().hex[:8]}"
    admin = ThreadStore(root_url)
    engine = admin.engine
    quoted_password = PASSWORD.replace("'", "''")
    database = urlsplit(root_url).path.lstrip("/") or "test"
    async with engine.begin() as connection:
        await connection.execute(
            text(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{quoted_password}'")
        )
        await connection.execute(text(f"GRANT ALL ON `{database}`.* TO '{user}'@'%'"))
    try:
        yield user
    finally:
        async with engine.begin() as connection:
            await connection.execute(text(f"DROP USER IF EXISTS '{user}'@'%'"))
        await admin.close()


async def test_mariadb_password_never_shows(logs: Capture, mariadb_user: str) -> None:
    seen = Seen()
    url = _with_password(service_url("mysql"), mariadb_user)
    store = await ThreadStore.create(url, namespace=fresh_namespace())
    try:
        await _use(store, seen)
    finally:
        await store.backend.drop()
        await store.close()
    await _fail_to_open(_with_password(url, mariadb_user, port=1), seen)
    await _fail_to_open(_with_password(url, mariadb_user, QUOTED + "wrong"), seen)
    await _fail_to_open(_with_password(url, "root", QUOTED), seen)
    assert seen.errors >= 5
    assert_no_password(seen.texts, "a repr or an exception")
    assert_no_password(logs.texts, "a log record")


# -- Redis: a server of our own with requirepass ---------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A redis-server on a free port whose password is :data:`PASSWORD`."""
    service_url("redis")  # skip (or fail in CI) where the test Redis is missing
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = _free_port()
    config = tmp_path / "redis.conf"
    # The password goes in a config file, not the command line (``ps`` would show it).
    config.write_text(
        f'port {port}\nbind 127.0.0.1\nrequirepass "{PASSWORD}"\nsave ""\nappendonly no\n'
        f"dir {tmp_path}\n"
    )
    server = subprocess.Popen([binary, str(config)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            subprocess.run(["sleep", "0.05"], check=True)
        yield port, server
    finally:
        server.terminate()
        server.wait(10)


async def test_redis_password_never_shows(
    logs: Capture, redis_with_password: tuple[int, subprocess.Popen[bytes]]
) -> None:
    port, server = redis_with_password
    seen = Seen()
    url = f"redis://default:{QUOTED}@127.0.0.1:{port}/0"
    store = await ThreadStore.create(url, namespace=fresh_namespace())
    try:
        await _use(store, seen)
        # The server goes away under a working store.
        server.terminate()
        await asyncio.to_thread(server.wait, 10)
        with pytest.raises(TylerStoreError) as caught:
            await store.get("t")
        seen.error(caught.value)
    finally:
        await store.close()
    await _fail_to_open(f"redis://default:{QUOTED}@127.0.0.1:{port}/0", seen)  # now closed
    await _fail_to_open(f"redis://default:{QUOTED}@127.0.0.1:{_free_port()}/0", seen)
    assert seen.errors >= 4
    assert_no_password(seen.texts, "a repr or an exception")
    assert_no_password(logs.texts, "a log record")


async def test_redis_wrong_password_never_shows(
    logs: Capture, redis_with_password: tuple[int, subprocess.Popen[bytes]]
) -> None:
    port, _ = redis_with_password
    seen = Seen()
    await _fail_to_open(f"redis://default:{QUOTED}x@127.0.0.1:{port}/0", seen)
    await _fail_to_open(f"redis://:{QUOTED}x@127.0.0.1:{port}/0", seen)
    assert any("auth" in item.lower() or "password" in item.lower() for item in seen.texts)
    assert_no_password(seen.texts, "a repr or an exception")
    assert_no_password(logs.texts, "a log record")


# -- MongoDB: credentials the test server does not know, and an unreachable server -----------------


@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_mongodb_password_never_shows(logs: Capture) -> None:
    base = service_url("mongodb")
    seen = Seen()
    host = urlsplit(base).netloc.rpartition("@")[2]
    url = f"mongodb://alice:{QUOTED}@{host}/tyler?serverSelectionTimeoutMS=2000"
    store = ThreadStore(url, namespace=fresh_namespace(), connect_timeout=10)
    seen.texts.append(repr(store))
    try:
        # mongoeco may accept any credentials or refuse them: either way nothing may leak.
        await store.initialize()
        await _use(store, seen)
    except TylerStoreError as exc:
        seen.error(exc)
    finally:
        await store.close()
    unreachable = f"mongodb://alice:{QUOTED}@127.0.0.1:1/tyler?serverSelectionTimeoutMS=300"
    await _fail_to_open(unreachable, seen)
    # PyMongo leaks a socket when closing a client cancels a monitor mid-connect (see
    # tests/test_mongo.py): collect it here, where that warning is expected, not in a later test.
    gc.collect()
    assert seen.errors >= 1
    assert_no_password(seen.texts, "a repr or an exception")
    assert_no_password(logs.texts, "a log record")


# -- the command line ------------------------------------------------------------------------------


def test_cli_output_never_shows_the_password(
    logs: Capture, capsys: pytest.CaptureFixture[str]
) -> None:
    url = _with_password(service_url("postgres"), "postgres")
    namespace = fresh_namespace()
    statuses = [
        cli.main(["--namespace", namespace, "migrate", url]),
        cli.main(["--url", url, "--namespace", namespace, "demo"]),
        cli.main(["--url", url, "--namespace", namespace, "list"]),
        cli.main(["--url", url, "--namespace", namespace, "stats"]),
        cli.main(["--url", url, "--namespace", namespace, "show", "no-such-thread"]),
        cli.main(["--url", _with_password(url, "postgres", port=1), "list"]),
        cli.main(["--url", f"redis://:{QUOTED}@127.0.0.1:1/0", "list"]),
        cli.main(["migrate", _with_password(url, "postgres", port=1)]),
    ]
    output = capsys.readouterr()
    asyncio.run(_drop(url, namespace))
    assert statuses[:4] == [0, 0, 0, 0]
    assert statuses[-3:] == [1, 1, 1]
    assert "***" in output.out + output.err
    assert_no_password([output.out, output.err], "the CLI's output")
    assert_no_password(logs.texts, "a log record")


async def _drop(url: str, namespace: str) -> None:
    store = await ThreadStore.create(url, namespace=namespace)
    try:
        await store.backend.drop()
    finally:
        await store.close()


def test_no_test_id_holds_a_password(request: pytest.FixtureRequest) -> None:
    """Parametrized URLs would print their passwords in every report: ids must not hold any."""
    ids = [item.nodeid for item in request.session.items]
    assert ids
    leaking = [nodeid for nodeid in ids if _URL_WITH_PASSWORD.search(nodeid) or MARK in nodeid]
    assert leaking == []
