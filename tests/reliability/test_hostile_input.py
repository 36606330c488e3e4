"""Hostile input on every backend: query syntax of every engine stored as plain data and found
exactly; what no backend can hold refused by the models before anything is written."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from tests.reliability.conftest import OpenStore
from tyler_core.models import Message, Thread
from tyler_core.store import ThreadStore
from tyler_core.testing.base import exact

# Query syntax of SQL, MongoDB, Lua and Redis keys (hash tags, globs, separators) and quotes.
HOSTILE_KEYS = [
    "$gt",
    "$where",
    "a.b",
    "a.$.b",
    "'; DROP TABLE threads; --",
    '" OR "1"="1',
    "%_\\",
    "{slot}",
    "}{",
    "*",
    "k:v:*",
    "[a-z]?",
    "` backtick",
    "ключ 🔑",
]
HOSTILE_VALUES: list[Any] = [
    {"$gt": ""},
    {"$ne": None},
    {"$where": "sleep(1000)"},
    {"a.b": {"$in": [1, 2]}},
    "' OR '1'='1",
    "'; DELETE FROM messages; --",
    "redis.call('FLUSHALL')",
    "]] .. redis.call('FLUSHALL') .. [[",
    "{slot}*:?",
    '\\"quoted\\"',
    "%",
    "_",
]
HOSTILE_IDS = [
    'it\'s {a}*:"x"',
    "{}",
    "*",
    "a:b:*",
    "'; DROP TABLE threads; --",
    "$gt",
    "\\",
    "x" * 255,
]


def _hostile_thread(thread_id: str, decoy: bool = False) -> Thread:
    """A thread whose every key, value and id is someone's query syntax. The decoy holds other
    values under the same keys, so a query that is parsed instead of compared finds it."""
    attributes: dict[str, Any] = {}
    for number, key in enumerate(HOSTILE_KEYS):
        value = HOSTILE_VALUES[number % len(HOSTILE_VALUES)]
        attributes[key] = "decoy" if decoy else value
    attributes["values"] = "decoy" if decoy else HOSTILE_VALUES
    thread = Thread(
        id=thread_id,
        title="decoy" if decoy else "'; DROP TABLE threads; -- {slot} *",
        attributes=attributes,
        source={"name": "{slack}*", "$gt": "decoy" if decoy else {"$gt": ""}, "a.b": "'"},
    )
    for number, message_id in enumerate(HOSTILE_IDS):
        thread.add_message(
            Message(
                id=message_id,
                role="user",
                content=f"{HOSTILE_VALUES[number % len(HOSTILE_VALUES)]!r}",
                attributes=dict.fromkeys(HOSTILE_KEYS, HOSTILE_VALUES[0]),
            )
        )
    return thread


async def _ids(found: list[Thread]) -> list[str]:
    return [thread.id for thread in found]


async def test_query_syntax_in_keys_values_and_ids_is_stored_and_found_exactly(
    open_store: OpenStore,
) -> None:
    store = await open_store()
    for thread_id in HOSTILE_IDS:
        await store.save(_hostile_thread(thread_id))
    await store.save(_hostile_thread("decoy", decoy=True))
    assert await store.count() == len(HOSTILE_IDS) + 1

    expected = {thread_id: _hostile_thread(thread_id) for thread_id in HOSTILE_IDS}
    for thread_id, original in expected.items():
        stored = await store.get(thread_id)
        assert stored is not None, thread_id
        assert stored.id == thread_id
        assert exact(stored.attributes) == exact(original.attributes)
        assert exact(stored.source) == exact(original.source)
        assert stored.title == original.title
        assert [(m.id, m.content, exact(m.attributes)) for m in stored.messages] == [
            (m.id, m.content, exact(m.attributes)) for m in original.messages
        ]

    wanted = sorted(HOSTILE_IDS)
    for number, key in enumerate(HOSTILE_KEYS):
        value = HOSTILE_VALUES[number % len(HOSTILE_VALUES)]
        found = await _ids(await store.find_by_attributes({key: value}))
        assert sorted(found) == wanted, (key, value)
        assert await _ids(await store.find_by_attributes({key: "decoy"})) == ["decoy"], key
    # An operator as a value is a value: it matches itself only, never "everything above ''".
    assert await store.find_by_attributes({"$gt": ""}) == []
    assert await store.find_by_attributes({"$gt": {"$gt": "a"}}) == []
    assert await store.find_by_attributes({"$where": {"$exists": True}}) == []
    assert sorted(await _ids(await store.find_by_attributes({"values": HOSTILE_VALUES}))) == wanted
    assert await store.find_by_attributes({"*": "*"}) == []
    assert await store.find_by_attributes({"%_\\": "%"}) == []
    assert (
        sorted(await _ids(await store.find_by_source("{slack}*", {"$gt": {"$gt": ""}, "a.b": "'"})))
        == wanted
    )
    assert await _ids(await store.find_by_source("{slack}*", {"$gt": "decoy"})) == ["decoy"]
    assert await store.find_by_source("*") == []
    assert await store.find_by_source("{slack}*", {"$gt": {"$ne": None}}) == []

    # Appends and deletes address exactly the one thread.
    added = await store.append(HOSTILE_IDS[0], Message(id="{new}*:'\"", role="user", content="*"))
    assert [m.id for m in added] == ["{new}*:'\""]
    assert await store.delete("*") is True
    assert await store.delete("{}") is True
    assert await store.delete("%") is False
    assert sorted(await _ids(await store.list_recent())) == sorted(
        ["decoy", *(i for i in HOSTILE_IDS if i not in ("*", "{}"))]
    )
    first = await store.get(HOSTILE_IDS[0])
    assert first is not None
    assert first.messages[-1].id == "{new}*:'\""
    assert len(first.messages) == len(HOSTILE_IDS) + 1


@pytest.mark.slow
async def test_a_10_mb_message_round_trips_exactly(open_store: OpenStore) -> None:
    store = await open_store()
    # Every code point width, a quote and a brace per kilobyte: nothing compressible to a run.
    block = "ascii 'quote' {brace} é ß 中文 🔑 \\ \" " * 32
    content = (block * (10 * 1024 * 1024 // len(block.encode()) + 1))[: 10 * 1024 * 1024]
    thread = Thread(id="big", title="big")
    thread.add_message(Message(role="user", content=content))
    await store.save(thread)
    stored = await store.get("big")
    assert stored is not None
    assert len(stored.messages) == 1
    assert stored.messages[0].content == content
    added = await store.append("big", Message(role="assistant", content="small after big"))
    assert added[0].sequence == 2
    again = await store.get("big")
    assert again is not None
    assert [m.content for m in again.messages] == [content, "small after big"]


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth - 1):
        value = {"k": value}
    return {"k": value} if depth > 0 else value


# (what, how to build a bad thread, how to break a loaded thread in place)
Edit = Callable[[Thread], None]


def _set_attr(value: Any) -> Edit:
    def edit(thread: Thread) -> None:
        thread.attributes["bad"] = value

    return edit


def _set_nested_attr(value: Any) -> Edit:
    def edit(thread: Thread) -> None:
        thread.messages[0].attributes["deep"] = {"list": [value]}

    return edit


def _set_content(value: str) -> Edit:
    def edit(thread: Thread) -> None:
        thread.messages[0].content = value

    return edit


def _set_key(key: str) -> Edit:
    def edit(thread: Thread) -> None:
        thread.attributes[key] = 1

    return edit


def _set_thread_id(value: str) -> Edit:
    def edit(thread: Thread) -> None:
        thread.id = value

    return edit


def _set_message_id(value: str) -> Edit:
    def edit(thread: Thread) -> None:
        thread.messages[0].id = value

    return edit


def _set_title(value: str) -> Edit:
    def edit(thread: Thread) -> None:
        thread.title = value

    return edit


REFUSED: list[tuple[str, Edit]] = [
    ("NUL in content", _set_content("before\x00after")),
    ("lone surrogate in content", _set_content("half \ud83d of an emoji")),
    ("NUL in title", _set_title("a\x00")),
    ("lone surrogate in title", _set_title("\udfff")),
    ("NUL in an attribute key", _set_key("k\x00")),
    ("lone surrogate in an attribute key", _set_key("\ud800")),
    ("NUL in a nested value", _set_nested_attr("\x00")),
    ("NaN", _set_attr(float("nan"))),
    ("infinity", _set_attr(float("inf"))),
    ("minus infinity in a nested list", _set_nested_attr(float("-inf"))),
    ("integer beyond 64 bits", _set_attr(2**63)),
    ("33-level nesting", _set_attr(_nested(32))),
    ("empty thread id", _set_thread_id("")),
    ("256-character thread id", _set_thread_id("x" * 256)),
    ("NUL in a thread id", _set_thread_id("a\x00b")),
    ("empty message id", _set_message_id("")),
    ("256-character message id", _set_message_id("m" * 256)),
]


def _good_thread() -> Thread:
    thread = Thread(id="victim", title="intact", attributes={"ok": 1, "nest": _nested(31)})
    thread.add_message(Message(id="m1", role="user", content="first"))
    thread.add_message(Message(id="m2", role="assistant", content="second"))
    return thread


def _fingerprint(thread: Thread | None) -> Any:
    assert thread is not None
    return exact(thread.model_dump(round_trip=True))


async def test_values_no_backend_can_hold_are_refused_before_anything_is_written(
    open_store: OpenStore,
) -> None:
    """Each bad value, built into a new model, edited in place into a loaded thread and saved,
    or appended: refused with a validation error, and the stored thread is unchanged."""
    store = await open_store()
    await store.save(_good_thread())
    before = _fingerprint(await store.get("victim"))
    # The limits themselves are fine: 31 levels below the thread's attributes, 255-char ids.
    assert _nested(31) == (await _loaded(store)).attributes["nest"]

    for what, edit in REFUSED:
        # A new model holding the value does not validate.
        fresh = _good_thread()
        edit(fresh)
        with pytest.raises((ValidationError, ValueError)):
            Thread.model_validate(fresh.model_dump(round_trip=True))

        # An in-place edit of a loaded thread is caught by save, before the backend sees it.
        loaded = await _loaded(store)
        edit(loaded)
        with pytest.raises((ValidationError, ValueError)):
            await store.save(loaded)
        assert loaded.version == 1, what  # the caller's object is left as it was
        assert _fingerprint(await store.get("victim")) == before, what

        # The same value in a message handed to append (or a bad thread id to append to).
        if "thread id" in what:
            target, message = _bad_id(what), Message(role="user", content="fine")
        else:
            target, message = "victim", _bad_message(what)
        with pytest.raises((ValidationError, ValueError)):
            await store.append(target, message)
        assert _fingerprint(await store.get("victim")) == before, what

    # Lookups with such values are refused too, not sent.
    for bad in (float("nan"), float("inf"), "\x00", "\ud800", _nested(33)):
        with pytest.raises(ValueError):
            await store.find_by_attributes({"k": bad})
        with pytest.raises(ValueError):
            await store.find_by_source("slack", {"k": bad})
    for bad_id in ("", "x" * 256, "a\x00", "\udc00"):
        with pytest.raises(ValueError):
            await store.get(bad_id)
        with pytest.raises(ValueError):
            await store.delete(bad_id)
    assert [t.id for t in await store.list()] == ["victim"]
    assert _fingerprint(await store.get("victim")) == before


def _bad_id(what: str) -> str:
    return {"empty thread id": "", "256-character thread id": "x" * 256}.get(what, "a\x00b")


def _bad_message(what: str) -> Message:
    """A message broken in place the way ``what`` describes (thread-level cases break its
    content, so every append is still refused)."""
    message = Message(id="appended", role="user", content="fine")
    if what.endswith("message id"):
        message.id = "" if what.startswith("empty") else "m" * 256
    elif "content" in what or "title" in what:
        message.content = "a\x00" if "NUL" in what else "\ud800"
    elif "key" in what:
        message.attributes["k\x00" if "NUL" in what else "\ud800"] = 1
    elif what == "NaN":
        message.attributes["bad"] = float("nan")
    elif "infinity" in what:
        message.attributes["bad"] = {"l": [float("-inf")]}
    elif "64 bits" in what:
        message.attributes["bad"] = -(2**63) - 1
    elif "nesting" in what:
        message.attributes["bad"] = _nested(32)
    else:
        message.attributes["bad"] = ["\x00"]
    return message


async def _loaded(store: ThreadStore) -> Thread:
    thread = await store.get("victim")
    assert thread is not None
    return thread
