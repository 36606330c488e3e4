"""The facade's own policy: change sets, options, errors, masking, lifecycle."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Self

import pytest
from typing_extensions import override

from tyler_core import (
    BackendError,
    ConcurrencyError,
    MemoryBackend,
    Message,
    NotSupportedError,
    StoreConnectionError,
    StoreOptions,
    Thread,
    ThreadChanges,
    ThreadStore,
    register_backend,
    unregister_backend,
)
from tyler_core.backend import Capabilities
from tyler_core.urls import mask_url, mask_urls_in

SECRET = "s3cr3t-pa55"


class RecordingBackend(MemoryBackend):
    """The reference backend, recording what the facade hands it."""

    last_url = ""
    last_options: StoreOptions | None = None
    fail_with: Exception | None = None
    hang_on_open = False

    def __init__(self, name: str, options: StoreOptions) -> None:
        super().__init__(name, options)
        self.writes: list[ThreadChanges] = []

    @classmethod
    @override
    def from_url(cls, url: str, options: StoreOptions) -> Self:
        RecordingBackend.last_url = url
        RecordingBackend.last_options = options
        return cls("", options)

    @override
    async def open(self) -> None:
        if RecordingBackend.hang_on_open:
            await asyncio.sleep(3600)
        await super().open()

    @override
    async def write(self, changes: ThreadChanges) -> None:
        if RecordingBackend.fail_with is not None:
            raise RecordingBackend.fail_with
        self.writes.append(changes)
        await super().write(changes)


class NoTTLBackend(RecordingBackend):
    capabilities = Capabilities()


@pytest.fixture(autouse=True)
def recording() -> Iterator[None]:
    register_backend("rec", RecordingBackend)
    register_backend("nottl", NoTTLBackend)
    yield
    RecordingBackend.fail_with = None
    RecordingBackend.hang_on_open = False
    unregister_backend("rec")
    unregister_backend("nottl")


@pytest.fixture
async def store() -> AsyncIterator[ThreadStore]:
    async with ThreadStore(f"rec://user:{SECRET}@host/db") as opened:
        yield opened


def writes(store: ThreadStore) -> list[ThreadChanges]:
    backend = store.backend
    assert isinstance(backend, RecordingBackend)
    return backend.writes


def long_thread(n: int) -> Thread:
    thread = Thread(title="long")
    for i in range(n):
        thread.add_message(Message(role="user" if i % 2 else "assistant", content=f"m{i}"))
    return thread


async def test_appending_one_message_to_a_loaded_1000_message_thread_hands_over_one(
    store: ThreadStore,
) -> None:
    await store.save(long_thread(1000))
    thread = (await store.list_recent(1))[0]
    thread.add_message(Message(role="user", content="one more"))
    await store.save(thread)
    changes = writes(store)[-1]
    assert not changes.full
    assert [m.content for m in changes.added] == ["one more"]
    assert changes.changed == [] and changes.removed == []
    assert not changes.thread_changed


async def test_in_place_nested_edit_is_handed_over_and_persists(store: ThreadStore) -> None:
    thread = Thread()
    thread.add_message(Message(role="user", content="x", attributes={"k": {"x": 0}}))
    await store.save(thread)
    thread.messages[0].attributes["k"]["x"] = 1
    await store.save(thread)
    changes = writes(store)[-1]
    assert [m.attributes for m in changes.changed] == [{"k": {"x": 1}}]
    assert changes.added == [] and not changes.thread_changed
    stored = await store.get(thread.id)
    assert stored is not None
    assert stored.messages[0].attributes == {"k": {"x": 1}}


async def test_type_only_edits_count_as_changes(store: ThreadStore) -> None:
    thread = Thread(attributes={"n": 1})
    thread.add_message(Message(role="user", content="x", metrics={"v": 1}))
    await store.save(thread)
    thread.attributes["n"] = True  # == 1 in Python, a different JSON value
    thread.messages[0].metrics["v"] = 1.0
    await store.save(thread)
    changes = writes(store)[-1]
    assert changes.thread_changed
    assert len(changes.changed) == 1
    stored = await store.get(thread.id)
    assert stored is not None
    assert stored.attributes["n"] is True
    assert type(stored.messages[0].metrics["v"]) is float


async def test_removed_and_system_messages(store: ThreadStore) -> None:
    thread = Thread()
    thread.add_message(Message(role="system", content="rules"))
    keep = Message(role="user", content="keep")
    drop = Message(role="assistant", content="drop")
    thread.add_message(keep)
    thread.add_message(drop)
    await store.save(thread)
    assert [m.role for m in writes(store)[-1].messages] == ["user", "assistant"]
    thread.messages.remove(drop)
    await store.save(thread)
    assert writes(store)[-1].removed == [drop.id]
    assert [m.role for m in thread.messages] == ["system", "user"]  # the caller keeps its own


async def test_a_thread_without_a_snapshot_is_written_in_full(store: ThreadStore) -> None:
    thread = long_thread(3)
    await store.save(thread)
    clone = Thread.model_validate(thread.model_dump())
    clone.add_message(Message(role="user", content="more"))
    await store.save(clone)
    assert writes(store)[-1].full
    assert len(writes(store)[-1].messages) == 4


async def test_snapshots_are_per_store() -> None:
    async with ThreadStore("rec://") as first, ThreadStore("rec://") as second:
        thread = long_thread(2)
        await first.save(thread)
        thread.version = 0  # a copy into another store
        await second.save(thread)
        assert writes(second)[-1].full


async def test_messages_appended_without_sequence_get_one(store: ThreadStore) -> None:
    thread = long_thread(2)
    await store.save(thread)
    raw = Message(role="user", content="raw append")
    thread.messages.append(raw)
    assert raw.sequence is None
    await store.save(thread)
    assert raw.sequence == 3
    assert [m.content for m in writes(store)[-1].added] == ["raw append"]


async def test_failed_save_leaves_the_callers_object_as_it_was(store: ThreadStore) -> None:
    thread = long_thread(2)
    await store.save(thread)
    before = thread.model_dump()
    raw = Message(role="user", content="x")
    raw.timestamp = datetime(2024, 1, 1)  # naive, assigned without validation
    thread.messages.append(raw)
    RecordingBackend.fail_with = RuntimeError("disk on fire")
    with pytest.raises(BackendError, match="disk on fire"):
        await store.save(thread)
    assert raw.sequence is None and raw.timestamp.tzinfo is None
    thread.messages.remove(raw)
    assert thread.model_dump() == before


async def test_invalid_in_place_edit_is_refused_before_writing(store: ThreadStore) -> None:
    thread = long_thread(1)
    await store.save(thread)
    thread.messages[0].attributes["bad"] = float("nan")
    with pytest.raises(ValueError, match="not a JSON number"):
        await store.save(thread)
    thread.attributes["deep"] = {"x": "\x00"}
    del thread.messages[0].attributes["bad"]
    with pytest.raises(ValueError, match="NUL"):
        await store.save(thread)
    assert len(writes(store)) == 1
    stored = await store.get(thread.id)
    assert stored is not None and stored.attributes == {} and stored.version == 1


async def test_stale_save_raises_and_writes_nothing(store: ThreadStore) -> None:
    thread = long_thread(1)
    await store.save(thread)
    other = await store.get(thread.id)
    assert other is not None
    other.title = "winner"
    await store.save(other)
    thread.title = "loser"
    with pytest.raises(ConcurrencyError):
        await store.save(thread)
    assert thread.version == 1
    stored = await store.get(thread.id)
    assert stored is not None and stored.title == "winner" and stored.version == 2


async def test_clock_is_injected() -> None:
    moment = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    async with ThreadStore("rec://", clock=lambda: moment) as store:
        thread = await store.save(Thread())
        assert thread.updated_at == moment
        appended = await store.append(thread.id, Message(role="user", content="x"))
        assert appended[0].sequence == 1
        stored = await store.get(thread.id)
        assert stored is not None and stored.updated_at == moment and stored.version == 2


async def test_touch_false_and_preserve(store: ThreadStore) -> None:
    past = datetime(2001, 1, 1, tzinfo=UTC)
    thread = Thread(updated_at=past)
    await store.save(thread, touch=False)
    assert thread.updated_at == past and thread.version == 1
    copy = Thread(id="copied", version=7, updated_at=past)
    await store.save(copy, preserve=True)
    assert copy.version == 7 and copy.updated_at == past
    assert writes(store)[-1].expected_version is None
    stored = await store.get("copied")
    assert stored is not None and stored.version == 7


def test_options_come_from_keywords_then_query_then_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TYLER_DB_POOL_SIZE", "7")
    monkeypatch.setenv("TYLER_DB_MAX_OVERFLOW", "3")
    monkeypatch.setenv("TYLER_DB_POOL_RECYCLE", "300")
    ThreadStore(
        "rec://h/db?pool_size=5&max_overflow=9&namespace=from_query&sslmode=require",
        max_overflow=1,
    )
    options = RecordingBackend.last_options
    assert options is not None
    assert (options.pool_size, options.max_overflow, options.pool_recycle) == (5, 1, 300.0)
    assert options.namespace == "from_query"
    assert options.pool_timeout is None and options.connect_timeout == 10.0
    assert RecordingBackend.last_url == "rec://h/db?sslmode=require"


def test_unknown_keywords_reach_the_backend_as_extra() -> None:
    ThreadStore("rec://", echo=True)
    assert RecordingBackend.last_options is not None
    assert RecordingBackend.last_options.extra == {"echo": True}


@pytest.mark.parametrize(
    "namespace", ["", "UPPER", "with-dash", "x" * 33, "sp ace", "naïve", "a;drop"]
)
def test_bad_namespace_is_a_value_error(namespace: str) -> None:
    with pytest.raises(ValueError, match="namespace"):
        ThreadStore("memory://", namespace=namespace)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("pool_size", "0"),
        ("pool_size", "x"),
        ("connect_timeout", "-1"),
        ("ttl", "nan"),
        ("ttl", "3153600001"),
    ],
)
def test_bad_option_values_are_value_errors(option: str, value: str) -> None:
    with pytest.raises(ValueError, match=option):
        ThreadStore(f"memory://?{option}={value}")


def test_bad_transactions_option() -> None:
    with pytest.raises(ValueError, match="transactions"):
        ThreadStore("memory://", transactions="maybe")


async def test_ttl_needs_the_capability() -> None:
    with pytest.raises(NotSupportedError, match="ttl"):
        ThreadStore("nottl://", ttl=5)
    async with ThreadStore("nottl://") as store:
        with pytest.raises(NotSupportedError, match="ttl"):
            await store.save(Thread(), ttl=5)
        with pytest.raises(NotSupportedError, match="search"):
            await store.search_threads("hello")


async def test_open_that_hangs_fails_within_connect_timeout() -> None:
    RecordingBackend.hang_on_open = True
    store = ThreadStore(f"rec://user:{SECRET}@host/db", connect_timeout=0.2)
    with pytest.raises(StoreConnectionError, match=r"within 0\.2 s") as caught:
        await store.initialize()
    assert SECRET not in str(caught.value)
    with pytest.raises(StoreConnectionError):
        await ThreadStore.create("rec://", connect_timeout=0.1)


async def test_driver_errors_are_wrapped_with_credentials_scrubbed(store: ThreadStore) -> None:
    RecordingBackend.fail_with = RuntimeError(
        f"cannot write to postgresql://user:{SECRET}@host/db (password={SECRET})"
    )
    with pytest.raises(BackendError) as caught:
        await store.save(Thread())
    assert SECRET not in str(caught.value)
    assert caught.value.__cause__ is None  # the driver's text held the password
    RecordingBackend.fail_with = RuntimeError("plain failure")
    with pytest.raises(BackendError) as caught:
        await store.save(Thread())
    assert isinstance(caught.value.__cause__, RuntimeError)


@pytest.mark.parametrize(
    "password",
    [SECRET, f"ab@{SECRET}", f"{SECRET}@x@y", f"a?b#{SECRET}", f"{SECRET}:x"],
    ids=["plain", "an-at-inside", "two-ats-after", "query-and-fragment-marks", "a-colon"],
)
def test_a_password_with_unencoded_delimiters_is_masked_whole(password: str) -> None:
    url = f"postgresql://app:{password}@127.0.0.1:5432/db"
    assert mask_url(url) == "postgresql://app:***@127.0.0.1:5432/db"
    text = f"failed at {url}, retrying redis://:{password}@h/0 and http://a@b/c"
    masked = mask_urls_in(text)
    assert SECRET not in masked
    assert masked.endswith("redis://:***@h/0 and http://a@b/c")


async def test_credentials_never_reach_repr_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"rec://user:{SECRET}@host/db?password={SECRET}"
    RecordingBackend.fail_with = RuntimeError(f"boom {url}")
    async with ThreadStore(url) as store:
        assert SECRET not in repr(store)
        assert store.database_url == url
        with pytest.raises(BackendError):
            await store.save(Thread())
    assert caplog.records
    assert all(SECRET not in record.getMessage() for record in caplog.records)


async def test_closed_store_refuses_work() -> None:
    store = await ThreadStore.create("rec://")
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreConnectionError, match="closed"):
        await store.get("x")


async def test_properties() -> None:
    store = ThreadStore()
    assert store.engine is None
    assert store.capabilities.search
    assert not store.capabilities.shared_across_instances
    assert ThreadStore("memory://shared").capabilities.shared_across_instances
    await store.close()


@pytest.mark.parametrize("limit", [-1, -100])
async def test_negative_limits_and_offsets(limit: int) -> None:
    async with ThreadStore() as store:
        with pytest.raises(ValueError, match="limit"):
            await store.list(limit=limit)
        with pytest.raises(ValueError, match="offset"):
            await store.list(offset=limit)
        with pytest.raises(ValueError, match="limit"):
            await store.list_recent(limit)
        with pytest.raises(ValueError, match="limit"):
            await store.find_by_attributes({"a": 1}, limit=limit)
        with pytest.raises(ValueError, match="offset"):
            await store.find_by_source("slack", offset=limit)


async def test_argument_types_are_checked() -> None:
    async with ThreadStore() as store:
        with pytest.raises(ValueError, match="at least one attribute"):
            await store.find_by_attributes({})
        with pytest.raises(TypeError):
            await store.find_by_attributes([("a", 1)])  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="not a JSON number"):
            await store.find_by_attributes({"a": float("nan")})
        with pytest.raises(TypeError):
            await store.get(42)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            await store.get("")
        with pytest.raises(TypeError):
            await store.save({"id": "x"})  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await store.list(limit=True)
        with pytest.raises(ValueError, match="ttl"):
            await store.save(Thread(), ttl=-1)


async def test_append_drops_system_messages_and_returns_copies() -> None:
    async with ThreadStore() as store:
        thread = await store.save(Thread())
        mine = Message(role="user", content="hello", sequence=99)
        added = await store.append(thread.id, Message(role="system", content="ignored"), mine)
        assert [m.content for m in added] == ["hello"]
        assert added[0].sequence == 1 and mine.sequence == 99
        assert added[0] is not mine
        with pytest.raises(ValueError, match="two messages"):
            await store.append(
                thread.id, Message(id="d", role="user"), Message(id="d", role="user")
            )
        with pytest.raises(ValueError, match="already has"):
            await store.append(thread.id, Message(id=added[0].id, role="user"))
        assert await store.append(thread.id, Message(role="system")) == []


async def test_list_threads_and_count() -> None:
    async with ThreadStore() as store:
        for i in range(3):
            await store.save(Thread(title=str(i)))
        threads, total = await store.list_threads(limit=2)
        assert len(threads) == 2 and total == 3
        assert await store.count() == 3


async def test_updated_at_moves_with_the_clock() -> None:
    ticks = iter(datetime(2030, 1, 1, tzinfo=UTC) + timedelta(seconds=i) for i in range(100))
    async with ThreadStore(clock=lambda: next(ticks)) as store:
        a = await store.save(Thread(title="a"))
        b = await store.save(Thread(title="b"))
        assert [t.title for t in await store.list_recent()] == ["b", "a"]
        await store.save(a)
        assert [t.title for t in await store.list_recent()] == ["a", "b"]
        assert b.updated_at < a.updated_at
