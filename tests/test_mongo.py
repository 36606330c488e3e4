"""The MongoDB backend: the conformance suite in both transaction modes, plus what only Mongo has.

Runs against ``TYLER_TEST_MONGODB_URL``, else 127.0.0.1:27017 (``bash .ci/mongo-server.sh start``
runs mongoeco's MongoDB-wire-compatible server there), else testcontainers. Where mongoeco
behaves unlike MongoDB, the test says so and why.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import pytest
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import OperationFailure

from tests.services import service_url
from tyler_core import Message, Thread, ThreadStore
from tyler_core.errors import BackendError, ConcurrencyError, StoreConnectionError
from tyler_core.models import new_incarnation, set_incarnation
from tyler_core.store import Clock
from tyler_core.testing import ThreadStoreConformance
from tyler_core.testing.base import fresh_namespace
from tyler_mongo.backend import MongoBackend

DATABASE = "tyler_test"
_WRITES = {"insert", "update", "delete", "findAndModify"}


def mongo_url(database: str = DATABASE) -> str:
    """The test server's URL with ``database`` as its path (unless the URL names one)."""
    parts = urlsplit(service_url("mongodb"))
    path = parts.path if parts.path not in ("", "/") else f"/{database}"
    return urlunsplit(parts._replace(path=path))


# Namespaces the current test opened: their collections are dropped after it (``purge`` only
# empties them, and every test uses fresh ones).
_namespaces: set[str] = set()


async def open_mongo(namespace: str, *, clock: Clock | None = None, **options: Any) -> ThreadStore:
    """A store on the test server."""
    _namespaces.add(namespace)
    return await ThreadStore.create(mongo_url(), namespace=namespace, clock=clock, **options)


@pytest.fixture(autouse=True)
async def _drop_collections() -> AsyncIterator[None]:
    yield
    if not _namespaces:
        return
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url())
    try:
        for namespace in sorted(_namespaces):
            for kind in ("threads", "messages"):
                await client.get_default_database().drop_collection(f"{namespace}_{kind}")
    finally:
        _namespaces.clear()
        await client.close()


_transactions_supported: dict[str, bool] = {}


async def skip_without_transactions() -> None:
    """Skip the test if the server refuses multi-document transactions (a standalone
    ``mongod``, as testcontainers starts; mongoeco and replica sets accept them)."""
    url = mongo_url()
    if url not in _transactions_supported:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
        try:
            async with client.start_session() as session:

                async def probe(session: AsyncClientSession) -> None:
                    database = client.get_default_database()
                    await database["transaction_probe"].find_one({}, session=session)

                await session.with_transaction(probe)
            _transactions_supported[url] = True
        except OperationFailure:
            _transactions_supported[url] = False
        finally:
            await client.close()
    if not _transactions_supported[url]:
        pytest.skip("the MongoDB server refuses transactions (standalone): use a replica set")


class _MongoConformance(ThreadStoreConformance):
    # The mongoeco server is pure Python (milliseconds per write): keep the random runs small.
    stateful_examples = 10
    stateful_steps = 20
    concurrency = 10

    async def open_store(self, namespace: str, *, clock: Clock | None = None) -> ThreadStore:
        if self.store_options.get("transactions") == "on":
            await skip_without_transactions()
        return await open_mongo(namespace, clock=clock, **dict(self.store_options))


class TestMongoWithTransactions(_MongoConformance):
    """Multi-document transactions. (mongoeco accepts them without a replica set; a standalone
    ``mongod`` would refuse them, and ``transactions=auto`` would not use them there.)"""

    store_options = {"transactions": "on"}


class TestMongoCommitPoint(_MongoConformance):
    """No transactions: the thread document's update is the commit point."""

    store_options = {"transactions": "off"}


# -- backend-only tests ----------------------------------------------------------------------


class CommandLog(monitoring.CommandListener):
    """Records the commands a client sends, for counting writes."""

    def __init__(self) -> None:
        self.events: list[monitoring.CommandStartedEvent] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.events.append(event)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        return None

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        return None

    def writes(self) -> list[tuple[str, str, int]]:
        """``(command, collection, documents or statements)`` of each write command."""
        found = []
        for event in self.events:
            if event.command_name not in _WRITES:
                continue
            command = event.command
            items = command.get("documents") or command.get("updates") or command.get("deletes")
            count = len(items) if items is not None else 1
            found.append((event.command_name, str(command[event.command_name]), count))
        return found


class OpenStore(Protocol):
    """The ``stores`` fixture: opens a store (fresh namespace unless given) with options."""

    async def __call__(self, namespace: str | None = None, **options: Any) -> ThreadStore: ...


@pytest.fixture
async def stores() -> AsyncIterator[OpenStore]:
    """Opens Mongo stores on fresh namespaces; purges and closes them after the test."""
    opened: list[ThreadStore] = []

    async def open_one(namespace: str | None = None, **options: Any) -> ThreadStore:
        store = await open_mongo(namespace or fresh_namespace(), **options)
        opened.append(store)
        return store

    yield open_one
    for store in reversed(opened):
        try:
            await store.backend.purge()
        finally:
            await store.close()


def _backend(store: ThreadStore) -> MongoBackend:
    backend = store.backend
    assert isinstance(backend, MongoBackend)
    return backend


@pytest.mark.parametrize("mode", ["off", "on"])
async def test_append_to_a_long_thread_writes_one_message_and_one_thread_update(
    stores: OpenStore, mode: str
) -> None:
    if mode == "on":
        await skip_without_transactions()
    log = CommandLog()
    store = await stores(transactions=mode, event_listeners=[log])
    thread = Thread(id="long")
    for number in range(1000):
        thread.add_message(Message(role="user", content=f"message {number}"))
    await store.save(thread)
    namespace = store.options.namespace
    log.events.clear()

    appended = await store.append("long", Message(role="assistant", content="one more"))

    assert [m.sequence for m in appended] == [1001]
    assert sorted(log.writes()) == [
        ("insert", f"{namespace}_messages", 1),
        ("update", f"{namespace}_threads", 1),
    ]
    stored = await store.get("long")
    assert stored is not None
    assert len(stored.messages) == 1001
    assert stored.messages[-1].content == "one more"


async def test_saving_one_new_message_writes_one_message_and_one_thread_update(
    stores: OpenStore,
) -> None:
    log = CommandLog()
    store = await stores(transactions="off", event_listeners=[log])
    thread = Thread(id="delta")
    for number in range(50):
        thread.add_message(Message(role="user", content=f"message {number}"))
    await store.save(thread)
    namespace = store.options.namespace
    log.events.clear()

    thread.add_message(Message(role="assistant", content="reply"))
    await store.save(thread)

    assert sorted(log.writes()) == [
        ("insert", f"{namespace}_messages", 1),
        ("update", f"{namespace}_threads", 1),
    ]


@pytest.mark.parametrize("preserve", [False, True])
async def test_saving_a_new_thread_reads_nothing_and_sends_three_commands(
    stores: OpenStore, preserve: bool
) -> None:
    # Creating (or copying) a thread: the thread document's insert is the check, so no read
    # before it; one insert of every message, then one clean-up of older message documents.
    log = CommandLog()
    store = await stores(transactions="off", event_listeners=[log])
    await store.initialize()
    namespace = store.options.namespace
    thread = Thread(id="new", version=4 if preserve else 0)
    for number in range(3):
        thread.add_message(Message(role="user", content=f"message {number}"))
    log.events.clear()

    await store.save(thread, preserve=preserve)

    sent = [(e.command_name, str(e.command[e.command_name])) for e in log.events]
    assert sent == [
        ("insert", f"{namespace}_messages"),
        ("insert", f"{namespace}_threads"),
        ("delete", f"{namespace}_messages"),
    ]
    assert log.writes()[0] == ("insert", f"{namespace}_messages", 3)
    assert await store.get("new") == thread


@pytest.mark.parametrize("mode", ["off", "on"])
async def test_an_unchecked_save_over_a_stored_thread_replaces_it_whole(
    stores: OpenStore, mode: str
) -> None:
    # The save first assumes no thread is stored; its insert fails, and it reads and replaces.
    if mode == "on":
        await skip_without_transactions()
    store = await stores(transactions=mode)
    old = Thread(id="copied", title="old")
    for number in range(3):
        old.add_message(Message(role="user", content=f"old {number}"))
    await store.save(old)
    token = old.incarnation

    copy = Thread(id="copied", title="copy", version=7)
    copy.add_message(Message(role="user", content="copied"))
    await store.save(copy, preserve=True)

    stored = await store.get("copied")
    assert stored == copy
    assert stored is not None and stored.incarnation not in (None, token)
    assert await _message_documents(store, "copied") == 1


async def test_threads_stored_without_an_incarnation_are_checked_by_version_only(
    stores: OpenStore,
) -> None:
    # Thread documents written before incarnation tokens existed have no ``incarnation``.
    store = await stores()
    thread = Thread(id="legacy", title="old layout")
    thread.add_message(Message(role="user", content="first"))
    await store.save(thread)
    threads = _backend(store).database[f"{store.options.namespace}_threads"]
    await threads.update_one({"_id": "legacy"}, {"$unset": {"incarnation": ""}})

    loaded = await store.get("legacy")
    assert loaded is not None and loaded.incarnation is None
    loaded.title = "edited"
    await store.save(loaded)
    await store.append("legacy", Message(role="user", content="appended"))
    reloaded = await store.get("legacy")
    assert reloaded is not None and reloaded.incarnation is None
    assert reloaded.title == "edited" and len(reloaded.messages) == 2

    # An object that carries a token is of another incarnation than a thread without one.
    stale = reloaded.model_copy(deep=True)
    set_incarnation(stale, new_incarnation())
    stale.title = "from another incarnation"
    with pytest.raises(ConcurrencyError):
        await store.save(stale)

    # A save without a check stores a token from then on.
    await store.save(reloaded, preserve=True)
    assert (await store.get("legacy") or reloaded).incarnation not in (None, "")


# PyMongo leaks a socket when closing the client cancels a monitor in the middle of a connect
# (``_async_create_connection`` closes it on OSError, not on cancellation); collect it here.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_unreachable_server_raises_store_connection_error_with_the_password_masked() -> None:
    # Nothing listens on port 1. The facade's own timeout (connect_timeout) is far longer than
    # the driver's server selection, so the error must come from serverSelectionTimeoutMS.
    url = "mongodb://alice:s3cr3t-pw@127.0.0.1:1/tyler?serverSelectionTimeoutMS=300"
    store = ThreadStore(url, connect_timeout=60)
    with pytest.raises(StoreConnectionError) as caught:
        await store.initialize()
    message = str(caught.value)
    assert "ServerSelectionTimeoutError" in message
    assert "s3cr3t-pw" not in message
    assert "s3cr3t-pw" not in repr(store)
    assert "alice:***@127.0.0.1:1" in message
    del caught  # its traceback holds the failed client, and so the socket
    gc.collect()


async def test_server_selection_timeout_is_5_s_unless_the_url_sets_it() -> None:
    default = await ThreadStore.create(mongo_url(), namespace=fresh_namespace())
    custom_url = mongo_url() + "?serverSelectionTimeoutMS=1234"
    custom = await ThreadStore.create(custom_url, namespace=fresh_namespace())
    try:
        default_client = _backend(default).client
        custom_client = _backend(custom).client
        assert default_client is not None
        assert custom_client is not None
        assert default_client.options.server_selection_timeout == 5.0
        assert custom_client.options.server_selection_timeout == 1.234
    finally:
        await default.close()
        await custom.close()


async def test_database_comes_from_the_url_path() -> None:
    namespace = fresh_namespace()
    plain = urlunsplit(urlsplit(mongo_url())._replace(path=""))
    default = ThreadStore(plain, namespace=namespace)
    named = ThreadStore(
        urlunsplit(urlsplit(mongo_url())._replace(path="/other_db")), namespace=namespace
    )
    try:
        for store in (default, named):
            await store.initialize()
        assert _backend(default).database.name == "tyler"
        assert _backend(named).database.name == "other_db"
        for store in (default, named):
            for kind in ("threads", "messages"):
                await _backend(store).database.drop_collection(f"{namespace}_{kind}")
    finally:
        await default.close()
        await named.close()
    with pytest.raises(ValueError, match="database name"):
        ThreadStore(urlunsplit(urlsplit(mongo_url())._replace(path="/bad.name")))


async def test_transactions_auto_follows_the_server_topology(stores: OpenStore) -> None:
    store = await stores()
    backend = _backend(store)
    assert backend.client is not None
    hello = await backend.client.admin.command("hello")
    replicated = bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"
    # mongoeco reports no replica set, so auto means the commit point there.
    assert backend.transactions is replicated
    assert _backend(await stores(transactions="on")).transactions is True
    assert _backend(await stores(transactions="off")).transactions is False


async def test_attribute_keys_are_stored_as_data_never_as_field_names(
    stores: OpenStore,
) -> None:
    store = await stores()
    attributes = {"a.b": 1, "$gt": "", "$where": "1 == 1", "x": {"$ne": None, "k.y": [1.0]}}
    await store.save(Thread(id="keys", attributes=attributes, source={"name": "n", "$in": []}))
    await store.save(Thread(id="other", attributes={"a": {"b": 1}}))
    backend = _backend(store)
    raw = await backend.database[f"{store.options.namespace}_threads"].find_one({"_id": "keys"})
    assert raw is not None
    assert [pair["k"] for pair in raw["attrs"]] == list(attributes)
    assert [t.id for t in await store.find_by_attributes({"a.b": 1})] == ["keys"]
    assert [t.id for t in await store.find_by_attributes({"$gt": ""})] == ["keys"]
    assert [t.id for t in await store.find_by_attributes({"x": attributes["x"]})] == ["keys"]
    assert await store.find_by_attributes({"$where": "true"}) == []
    assert [t.id for t in await store.find_by_source("n", {"$in": []})] == ["keys"]
    stored = await store.get("keys")
    assert stored is not None
    assert stored.attributes == attributes


async def test_datetimes_keep_microseconds_and_ints_stay_ints(stores: OpenStore) -> None:
    store = await stores()
    thread = Thread(id="micro", attributes={"int": 2**63 - 1, "float": 1.0, "bool": True})
    thread.add_message(Message(role="user", content="x"))
    await store.save(thread)
    stored = await store.get("micro")
    assert stored is not None
    assert stored.updated_at == thread.updated_at
    assert stored.updated_at.microsecond == thread.updated_at.microsecond
    assert stored.messages[0].timestamp == thread.messages[0].timestamp
    assert [type(v) for v in stored.attributes.values()] == [int, float, bool]


async def _message_documents(store: ThreadStore, thread_id: str) -> int:
    collection = _backend(store).database[f"{store.options.namespace}_messages"]
    return await collection.count_documents({"t": thread_id})


@pytest.mark.parametrize("mode", ["off", "on"])
async def test_an_interrupted_save_leaves_the_old_thread_and_the_next_save_cleans_up(
    stores: OpenStore, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    if mode == "on":
        await skip_without_transactions()
    store = await stores(transactions=mode)
    reader = await stores(store.options.namespace, transactions=mode)
    thread = Thread(id="crash", title="old")
    for number in range(3):
        thread.add_message(Message(role="user", content=f"old {number}"))
    await store.save(thread)
    before = (await reader.get("crash"), 3)

    thread.title = "new"
    thread.messages[0].content = "changed"
    del thread.messages[1]
    thread.add_message(Message(role="assistant", content="added"))

    async def crash(self: MongoBackend, *args: Any) -> bool:
        raise RuntimeError("crashed between the message writes and the commit")

    with monkeypatch.context() as patch:
        patch.setattr(MongoBackend, "_commit", crash)
        with pytest.raises(BackendError, match="crashed"):
            await store.save(thread)

    assert await reader.get("crash") == before[0]
    leftovers = await _message_documents(store, "crash")
    if mode == "off":
        # The changed and the added message were written before the commit that never came.
        assert leftovers == 3 + 2
    else:
        assert leftovers == 3, "an aborted transaction leaves nothing behind"

    await store.save(thread)
    stored = await reader.get("crash")
    assert stored is not None
    assert stored.title == "new"
    assert [m.content for m in stored.messages] == ["changed", "old 2", "added"]
    assert await _message_documents(store, "crash") == 3


async def test_messages_never_expire_before_their_thread(stores: OpenStore) -> None:
    store = await stores()
    thread = Thread(id="ttl")
    thread.add_message(Message(role="user", content="first"))
    await store.save(thread, ttl=3600)
    await store.append("ttl", Message(role="user", content="second"))
    database = _backend(store).database
    namespace = store.options.namespace
    raw = await database[f"{namespace}_threads"].find_one({"_id": "ttl"})
    assert raw is not None
    messages = [m async for m in database[f"{namespace}_messages"].find({"t": "ttl"})]
    assert len(messages) == 2
    assert all(m["expires_at"] >= raw["expires_at"] for m in messages)

    await store.save(await store.get("ttl") or thread)  # no ttl any more
    messages = [m async for m in database[f"{namespace}_messages"].find({"t": "ttl"})]
    assert all(m.get("expires_at") is None for m in messages)


async def test_drop_removes_both_collections(stores: OpenStore) -> None:
    store = await stores()
    await store.save(Thread(id="dropped", messages=[Message(role="user", content="gone")]))
    database = _backend(store).database
    namespace = store.options.namespace
    names = {f"{namespace}_threads", f"{namespace}_messages"}
    assert names <= set(await database.list_collection_names())

    await store.backend.drop()

    assert not names & set(await database.list_collection_names())


def test_srv_urls_reach_the_backend_unchanged_with_the_password_masked() -> None:
    store = ThreadStore(
        "mongodb+srv://alice:pa55w0rd@cluster0.example.net/appdb?retryWrites=true&namespace=ns"
    )
    backend = _backend(store)
    assert store.options.namespace == "ns"
    assert repr(backend) == (
        "MongoBackend('mongodb+srv://alice:***@cluster0.example.net/appdb?retryWrites=true', "
        "namespace='ns')"
    )
    assert "pa55w0rd" not in repr(store)


async def test_a_delete_cut_short_leaves_nothing_visible_and_the_next_save_cleans_up(
    stores: OpenStore,
) -> None:
    store = await stores(transactions="off")
    old = Thread(id="reused")
    for number in range(3):
        old.add_message(Message(role="user", content=f"old {number}"))
    await store.save(old)
    # The thread document is gone but its messages are not: a delete that stopped halfway.
    threads = _backend(store).database[f"{store.options.namespace}_threads"]
    await threads.delete_one({"_id": "reused"})
    assert await store.get("reused") is None
    assert await _message_documents(store, "reused") == 3

    new = Thread(id="reused")
    new.add_message(Message(role="user", content="new"))
    await store.save(new)

    stored = await store.get("reused")
    assert stored is not None
    assert [m.content for m in stored.messages] == ["new"]
    assert await _message_documents(store, "reused") == 1


async def test_search_matches_whole_words_without_stemming_or_stopwords(
    stores: OpenStore,
) -> None:
    # The text index has language "none", so it agrees with the memory backend word for word.
    store = await stores()
    thread = Thread(id="words")
    thread.add_message(Message(role="user", content="The Running dogs"))
    await store.save(thread)
    assert [t.id for t in (await store.search_threads("running DOGS"))[0]] == ["words"]
    assert [t.id for t in (await store.search_threads("the"))[0]] == ["words"]
    assert await store.search_threads("run") == ([], 0)
    assert await store.search_threads("dog") == ([], 0)


@pytest.mark.parametrize("mode", ["off", "on"])
async def test_readers_never_see_a_mix_of_two_saves(stores: OpenStore, mode: str) -> None:
    if mode == "on":
        await skip_without_transactions()
    writer = await stores(transactions=mode)
    reader = await stores(writer.options.namespace, transactions=mode)
    thread = Thread(id="mix", title="v0")
    for _ in range(3):
        thread.add_message(Message(role="user", content="v0"))
    await writer.save(thread)
    done = asyncio.Event()

    async def write() -> None:
        for number in range(1, 16):
            thread.title = f"v{number}"
            for message in thread.messages:
                message.content = f"v{number}"
            await writer.save(thread)
        done.set()

    async def read() -> int:
        reads = 0
        while not done.is_set() and reads < 500:
            got = await reader.get("mix")
            assert got is not None
            assert [m.content for m in got.messages] == [got.title] * 3, "a mix of two saves"
            reads += 1
        return reads

    _, reads = await asyncio.gather(write(), read())
    assert reads > 0
    final = await reader.get("mix")
    assert final is not None
    assert final.title == "v15"
    # Every replaced message document is gone once the saves are over.
    assert await _message_documents(writer, "mix") == 3


async def test_the_losers_of_a_race_leave_no_message_documents(stores: OpenStore) -> None:
    store = await stores(transactions="off")
    await store.save(Thread(id="race"))
    copies = [await store.get("race") for _ in range(5)]

    async def save(copy: Thread | None, number: int) -> bool:
        assert copy is not None
        copy.add_message(Message(role="user", content=f"from {number}"))
        try:
            await store.save(copy)
        except ConcurrencyError:
            return False
        return True

    won = await asyncio.gather(*(save(copy, n) for n, copy in enumerate(copies)))
    assert sum(won) == 1
    stored = await store.get("race")
    assert stored is not None
    assert len(stored.messages) == 1
    assert await _message_documents(store, "race") == 1
