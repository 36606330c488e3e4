"""Change detection (rule 4): every change made through the model is handed to the backend, and
nothing else. Each test saves, edits, saves again and looks at the change set the backend got."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Self

import pytest
from typing_extensions import override

from tyler_core import (
    Attachment,
    MemoryBackend,
    Message,
    StoreOptions,
    Thread,
    ThreadChanges,
    ThreadStore,
    clones,
    register_backend,
    unregister_backend,
)
from tyler_core.testing.base import exact, stored_form


class RecordingBackend(MemoryBackend):
    """The reference backend, recording the change sets the facade hands it."""

    def __init__(self, name: str, options: StoreOptions) -> None:
        super().__init__(name, options)
        self.writes: list[ThreadChanges] = []

    @classmethod
    @override
    def from_url(cls, url: str, options: StoreOptions) -> Self:
        return cls("", options)

    @override
    async def write(self, changes: ThreadChanges) -> None:
        self.writes.append(changes)
        await super().write(changes)


@pytest.fixture(autouse=True)
def recording() -> Iterator[None]:
    register_backend("changesrec", RecordingBackend)
    yield
    unregister_backend("changesrec")


@pytest.fixture
async def store() -> AsyncIterator[ThreadStore]:
    async with ThreadStore("changesrec://") as opened:
        yield opened


async def save(store: ThreadStore, thread: Thread) -> ThreadChanges:
    """Save and return the change set the backend got."""
    await store.save(thread)
    backend = store.backend
    assert isinstance(backend, RecordingBackend)
    return backend.writes[-1]


async def reloaded(store: ThreadStore, thread: Thread) -> Thread:
    got = await store.get(thread.id)
    assert got is not None
    return got


def written(changes: ThreadChanges) -> tuple[list[str], list[str], list[str]]:
    """Ids of the added, changed and removed messages."""
    assert not changes.full
    return [m.id for m in changes.added], [m.id for m in changes.changed], list(changes.removed)


def thread_of(n: int, **fields: Any) -> Thread:
    thread = Thread(title="t")
    for i in range(n):
        fresh = copy.deepcopy(fields)  # no nested value shared between messages
        thread.add_message(Message(id=f"m{i}", role="user", content=f"message {i}", **fresh))
    return thread


NOTHING: tuple[list[str], list[str], list[str]] = ([], [], [])

# -- type-only changes: Python says 1 == 1.0 == True, JSON does not -----------------------------

TYPE_ONLY = [
    (1, 1.0),
    (1.0, 1),
    (1, True),
    (True, 1),
    (0, False),
    (False, 0.0),
    (0.0, -0.0),
    (-0.0, 0.0),
    (1, "1"),
    ("1", 1),
    (2**53, float(2**53)),
    ([1, 2], [1, 2.0]),
    ({"a": 1}, {"a": True}),
    ({}, []),
    (None, False),
]


@pytest.mark.parametrize(("before", "after"), TYPE_ONLY, ids=repr)
async def test_type_only_changes_deep_in_a_message_are_written(
    store: ThreadStore, before: Any, after: Any
) -> None:
    thread = thread_of(3)
    thread.messages[1].attributes = {"outer": {"list": [{"value": before}]}}
    await store.save(thread)
    thread.messages[1].attributes["outer"]["list"][0]["value"] = after
    assert written(await save(store, thread)) == ([], ["m1"], [])
    got = await reloaded(store, thread)
    assert exact(got.messages[1].attributes) == exact({"outer": {"list": [{"value": after}]}})
    assert written(await save(store, thread)) == NOTHING


@pytest.mark.parametrize(("before", "after"), TYPE_ONLY, ids=repr)
async def test_type_only_changes_in_thread_attributes_and_metrics_are_written(
    store: ThreadStore, before: Any, after: Any
) -> None:
    thread = thread_of(2)
    thread.attributes["n"] = before
    thread.messages[0].metrics["n"] = before
    await store.save(thread)
    loaded = await reloaded(store, thread)  # edits of a read thread count the same
    loaded.attributes["n"] = after
    changes = await save(store, loaded)
    assert changes.thread_changed and written(changes) == NOTHING
    loaded.messages[0].metrics["n"] = after
    changes = await save(store, loaded)
    assert not changes.thread_changed and written(changes) == ([], ["m0"], [])
    assert exact(await reloaded(store, thread)) == stored_form(loaded)


async def test_an_equal_value_of_the_same_type_is_no_change(store: ThreadStore) -> None:
    big = 2**40 + 1
    thread = thread_of(2, attributes={"big": big, "f": 0.5, "s": "text", "b": True})
    await store.save(thread)
    for message in thread.messages:  # new objects, equal values of the same types
        message.attributes = {"big": (2**40 + 1) * 1, "f": 1 / 2, "s": "te" + "xt", "b": True}
        message.content = "".join(["message ", message.id[1:]])
    changes = await save(store, thread)
    assert written(changes) == NOTHING and not changes.thread_changed


# -- in-place edits of nested values ------------------------------------------------------------


async def test_in_place_edits_at_any_depth_are_written(store: ThreadStore) -> None:
    deep: dict[str, Any] = {"leaf": 0}
    for level in range(25):
        deep = {f"level{level}": deep, "list": [level]}
    thread = thread_of(3)
    thread.messages[2].attributes["deep"] = deep
    await store.save(thread)
    cursor = thread.messages[2].attributes["deep"]
    for level in reversed(range(25)):
        cursor = cursor[f"level{level}"]
    cursor["leaf"] = 1
    assert written(await save(store, thread)) == ([], ["m2"], [])
    thread.messages[2].attributes["deep"]["list"].append("x")
    assert written(await save(store, thread)) == ([], ["m2"], [])
    got = await reloaded(store, thread)
    assert exact(got) == stored_form(thread)


async def test_deleted_keys_and_cleared_containers_are_written(store: ThreadStore) -> None:
    thread = thread_of(3, attributes={"k": 1, "gone": None}, metrics={"tokens": 3})
    thread.attributes = {"a": 1, "b": {"c": None}}
    await store.save(thread)
    del thread.messages[0].attributes["gone"]  # a None value is not a missing key
    thread.messages[1].metrics.pop("tokens")
    thread.messages[2].attributes.clear()
    del thread.attributes["b"]["c"]
    changes = await save(store, thread)
    assert written(changes) == ([], ["m0", "m1", "m2"], [])
    assert changes.thread_changed
    assert exact(await reloaded(store, thread)) == stored_form(thread)


async def test_content_parts_and_tool_calls_edited_in_place_are_written(
    store: ThreadStore,
) -> None:
    thread = Thread()
    thread.add_message(Message(id="parts", role="user", content=[{"type": "text", "text": "a"}]))
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    thread.add_message(Message(id="calls", role="assistant", tool_calls=[call]))
    thread.add_message(Message(id="plain", role="user", content="x"))
    await store.save(thread)
    content = thread.messages[0].content
    assert isinstance(content, list)
    content.append({"type": "image_url", "image_url": {"url": "https://example.com/a.png"}})
    assert written(await save(store, thread)) == ([], ["parts"], [])
    content[0]["text"] += "!"
    tool_calls = thread.messages[1].tool_calls
    assert tool_calls is not None
    tool_calls[0]["function"]["arguments"] = '{"x": 1}'
    assert written(await save(store, thread)) == ([], ["parts", "calls"], [])
    assert exact(await reloaded(store, thread)) == stored_form(thread)


async def test_reactions_are_written_whichever_way_they_change(store: ThreadStore) -> None:
    thread = thread_of(3)
    await store.save(thread)
    assert thread.add_reaction("m0", "👍", "amy")
    assert written(await save(store, thread)) == ([], ["m0"], [])
    thread.messages[0].reactions["👍"].append("bob")  # in place, not through the model's method
    assert written(await save(store, thread)) == ([], ["m0"], [])
    thread.messages[0].reactions["👍"].reverse()  # the order users reacted in is data
    assert written(await save(store, thread)) == ([], ["m0"], [])
    assert thread.remove_reaction("m0", "👍", "amy")
    assert written(await save(store, thread)) == ([], ["m0"], [])
    got = await reloaded(store, thread)
    assert got.get_reactions("m0") == {"👍": ["bob"]}


async def test_attachments_edited_in_place_are_written(store: ThreadStore) -> None:
    thread = thread_of(3)
    await store.save(thread)
    thread.messages[1].attachments.append(Attachment(filename="a.pdf", attributes={"pages": 1}))
    assert written(await save(store, thread)) == ([], ["m1"], [])
    attachment = thread.messages[1].attachments[0]
    attachment.attributes["pages"] = 1.0  # type only
    assert written(await save(store, thread)) == ([], ["m1"], [])
    attachment.attributes["tags"] = ["x"]
    assert written(await save(store, thread)) == ([], ["m1"], [])
    attachment.status = "stored"
    attachment.size = 10
    assert written(await save(store, thread)) == ([], ["m1"], [])
    thread.messages[1].attachments[0] = attachment.model_copy(deep=True)  # equal: no change
    assert written(await save(store, thread)) == NOTHING
    got = await reloaded(store, thread)
    assert exact(got) == stored_form(thread)
    got.messages[1].attachments[0].attributes["tags"].append("y")  # after a read, too
    assert written(await save(store, got)) == ([], ["m1"], [])


# -- replaced objects ---------------------------------------------------------------------------


async def test_a_value_replaced_by_an_equal_copy_is_no_change_and_stays_watched(
    store: ThreadStore,
) -> None:
    thread = thread_of(2, attributes={"k": {"x": [1, 2]}})
    await store.save(thread)
    thread.messages[0].attributes = copy.deepcopy(thread.messages[0].attributes)
    thread.attributes = dict(thread.attributes)
    changes = await save(store, thread)
    assert written(changes) == NOTHING and not changes.thread_changed
    thread.messages[0].attributes["k"]["x"].append(3)  # the new object is the one watched
    assert written(await save(store, thread)) == ([], ["m0"], [])


async def test_a_message_replaced_by_a_copy_is_no_change_and_the_copy_is_watched(
    store: ThreadStore,
) -> None:
    thread = thread_of(3, attributes={"k": 1})
    await store.save(thread)
    original = thread.messages[1]
    thread.messages[1] = original.model_copy(deep=True)
    assert written(await save(store, thread)) == NOTHING
    original.attributes["k"] = 2  # no longer part of the thread
    assert written(await save(store, thread)) == NOTHING
    thread.messages[1].attributes["k"] = 3
    assert written(await save(store, thread)) == ([], ["m1"], [])
    assert (await reloaded(store, thread)).messages[1].attributes == {"k": 3}


async def test_the_store_never_aliases_the_callers_objects(store: ThreadStore) -> None:
    thread = thread_of(2, attributes={"list": [1]})
    await store.save(thread)  # a full save: the snapshot comes from validated copies
    thread.messages[0].attributes["list"].append(2)
    assert written(await save(store, thread)) == ([], ["m0"], [])
    appended = Message(id="new", role="user", attributes={"list": [1]})
    appended.attachments.append(Attachment(filename="a", attributes={"n": [1]}))
    thread.add_message(appended)
    assert written(await save(store, thread)) == (["new"], [], [])
    appended.attributes["list"].append(2)
    appended.attachments[0].attributes["n"].append(2)
    assert written(await save(store, thread)) == ([], ["new"], [])
    loaded = await reloaded(store, thread)
    loaded.messages[1].attributes["list"].append(3)
    assert written(await save(store, loaded)) == ([], ["m1"], [])
    # Clones share empty containers: editing one that started empty touches no other message.
    loaded.messages[0].reactions.setdefault("👍", []).append("amy")
    assert written(await save(store, loaded)) == ([], ["m0"], [])
    assert written(await save(store, loaded)) == NOTHING
    assert clones._EMPTY_DICT == {} and clones._EMPTY_LIST == []


# -- top-level fields that validation normalises ------------------------------------------------


async def test_a_sequence_given_as_another_type_is_normalised_not_lost(store: ThreadStore) -> None:
    thread = thread_of(3)
    await store.save(thread)
    thread.messages[0].sequence = True  # == 1, and validates to 1
    await save(store, thread)
    assert [type(m.sequence) for m in thread.messages] == [int, int, int]
    assert exact(await reloaded(store, thread)) == stored_form(thread)
    assert written(await save(store, thread)) == NOTHING


async def test_a_timestamp_moved_to_another_zone_keeps_its_instant(store: ThreadStore) -> None:
    thread = thread_of(2)
    await store.save(thread)
    stamp = thread.messages[0].timestamp
    thread.messages[0].timestamp = stamp.astimezone(timezone(timedelta(hours=2)))
    changes = await save(store, thread)
    assert written(changes) == NOTHING  # the same instant: stored as the same UTC value
    got = await reloaded(store, thread)
    assert got.messages[0].timestamp == stamp and got.messages[0].timestamp.tzinfo is UTC
    thread.messages[1].timestamp = datetime(2020, 1, 1)  # naive: taken as UTC, a real change
    assert written(await save(store, thread)) == ([], ["m1"], [])
    assert (await reloaded(store, thread)).messages[1].timestamp == datetime(2020, 1, 1, tzinfo=UTC)


# -- the message list ---------------------------------------------------------------------------


async def test_system_messages_anywhere_are_never_written(store: ThreadStore) -> None:
    thread = Thread()
    thread.add_message(Message(id="s", role="system", content="rules"))
    for i in range(3):
        thread.add_message(Message(id=f"m{i}", role="user", content=str(i)))
    await store.save(thread)
    thread.messages[0].content = "other rules"
    assert written(await save(store, thread)) == NOTHING
    thread.messages.append(Message(id="late", role="system", content="late rules"))
    thread.add_message(Message(id="m3", role="user", content="3"))
    assert written(await save(store, thread)) == (["m3"], [], [])
    thread.add_message(Message(id="m4", role="user", content="4"))
    assert written(await save(store, thread)) == (["m4"], [], [])
    thread.messages[-2].role = "system"  # a stored message turned into a system message
    changes = await save(store, thread)
    assert written(changes) == ([], [], ["m3"])
    assert [m.id for m in changes.messages] == ["m0", "m1", "m2", "m4"]
    assert [m.id for m in (await reloaded(store, thread)).messages] == ["m0", "m1", "m2", "m4"]


async def test_appended_messages_get_sequences_and_are_checked_like_any_other(
    store: ThreadStore,
) -> None:
    thread = thread_of(3)
    await store.save(thread)
    thread.messages.append(Message(id="explicit", role="user", sequence=10))
    thread.messages.append(Message(id="next", role="user"))
    changes = await save(store, thread)
    assert written(changes) == (["explicit", "next"], [], [])
    assert [m.sequence for m in thread.messages] == [1, 2, 3, 10, 11]
    # Lower than the highest but free: written, and read back in sequence order.
    thread.messages.append(Message(id="between", role="user", sequence=5))
    changes = await save(store, thread)
    assert written(changes) == (["between"], [], [])
    assert [m.id for m in changes.messages] == ["m0", "m1", "m2", "between", "explicit", "next"]
    got = await reloaded(store, thread)
    assert [m.sequence for m in got.messages] == [1, 2, 3, 5, 10, 11]

    writes = len(store.backend.writes)  # type: ignore[attr-defined]
    thread.messages.append(Message(id="m1", role="user"))
    with pytest.raises(ValueError, match="two messages have the id"):
        await store.save(thread)
    thread.messages[-1] = Message(id="taken", role="user", sequence=5)
    with pytest.raises(ValueError, match="two messages have the sequence"):
        await store.save(thread)
    thread.messages[-1] = Message(id="bad", role="user")
    thread.messages[-1].attributes["x"] = float("nan")  # in place: the model does not see it
    with pytest.raises(ValueError, match="not a JSON number"):
        await store.save(thread)
    assert len(store.backend.writes) == writes  # type: ignore[attr-defined]
    # The failed saves left the snapshot alone: the next one is still a small delta.
    thread.messages[-1].attributes = {}
    assert written(await save(store, thread)) == (["bad"], [], [])


async def test_every_kind_of_change_at_once(store: ThreadStore) -> None:
    thread = thread_of(6)
    await store.save(thread)
    del thread.messages[4]
    thread.messages[0], thread.messages[1] = thread.messages[1], thread.messages[0]
    thread.messages[2].content = "edited"
    thread.add_message(Message(id="new", role="user"))
    changes = await save(store, thread)
    assert written(changes) == (["new"], ["m2"], ["m4"])
    assert [m.id for m in changes.messages] == ["m0", "m1", "m2", "m3", "m5", "new"]
    thread.messages.sort(key=lambda m: m.sequence or 0)  # as read back
    assert exact(await reloaded(store, thread)) == stored_form(thread)


async def test_reordering_the_list_writes_nothing(store: ThreadStore) -> None:
    thread = thread_of(4)
    await store.save(thread)
    thread.messages.reverse()
    changes = await save(store, thread)
    assert written(changes) == NOTHING
    assert [m.id for m in changes.messages] == ["m0", "m1", "m2", "m3"]
    thread.add_message(Message(id="new", role="user"))
    changes = await save(store, thread)
    assert written(changes) == (["new"], [], [])
    assert [m.id for m in changes.messages] == ["m0", "m1", "m2", "m3", "new"]


async def test_appending_to_a_long_thread_hands_over_one_message_each_time(
    store: ThreadStore,
) -> None:
    thread = thread_of(300, metrics={"tokens": 7, "latency": 0.25})
    thread.messages.insert(0, Message(id="system", role="system", content="rules"))
    await store.save(thread)
    for i in range(3):
        thread.add_message(Message(id=f"more{i}", role="assistant", metrics={"tokens": i}))
        changes = await save(store, thread)
        assert written(changes) == ([f"more{i}"], [], [])
        assert len(changes.messages) == 301 + i
    thread.messages[150].metrics["latency"] = 0.5
    assert written(await save(store, thread)) == ([], ["m149"], [])
    assert exact(await reloaded(store, thread)) == stored_form(thread)


async def test_an_assigned_sequence_is_validated_too(store: ThreadStore) -> None:
    thread = thread_of(1)
    thread.messages[0].sequence = 2**63 - 1  # the highest sequence a backend can hold
    await store.save(thread)
    thread.add_message(Message(id="one-too-many", role="user"))
    thread.messages[-1].sequence = None  # left for the store to assign: 2**63 is too high
    with pytest.raises(ValueError, match="less than or equal"):
        await store.save(thread)
    assert thread.messages[-1].sequence is None
