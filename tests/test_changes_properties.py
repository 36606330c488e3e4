"""Change detection, property-based: a snapshot's clone of a JSON value equals exactly the values
that are the same JSON (types included, key order not), and a save writes a message exactly when
one of its values became different JSON."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tyler_core import Message, Thread, ThreadChanges, ThreadStore
from tyler_core.clones import clone_message as _clone_message
from tyler_core.clones import clone_value as _clone
from tyler_core.jsonvalues import INT64_MAX, INT64_MIN
from tyler_core.testing.base import exact

_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=4)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(INT64_MIN, INT64_MAX)
    | st.sampled_from([0, 1, -1, 0.0, -0.0, 1.0, -1.0, True, False, "1", "", 2.0**53, 2**53])
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
)
json_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "k", "ä"]), children, max_size=3)
    ),
    max_leaves=12,
)


def _retyped(value: Any) -> list[Any]:
    """Values equal to ``value`` in Python but not as JSON (1 -> 1.0 -> True ...)."""
    if type(value) is bool:
        return [int(value), float(value)]
    if type(value) is int:
        out: list[Any] = [float(value)] if abs(value) <= 2**53 else []
        return out + ([bool(value)] if value in (0, 1) else [])
    if type(value) is float:
        out = [-value] if value == 0 else []
        return out + ([int(value)] if value.is_integer() and abs(value) < 2**63 else [])
    return []


@st.composite
def twisted(draw: st.DrawFn) -> tuple[Any, Any]:
    """A JSON value and a copy of it with one leaf changed to an equal value of another type
    (or the copy unchanged when it has no number)."""
    value = draw(json_values)

    def walk(item: Any) -> Any:
        if type(item) is dict and item:
            key = draw(st.sampled_from(sorted(item)))
            return {**item, key: walk(item[key])}
        if type(item) is list and item:
            index = draw(st.integers(0, len(item) - 1))
            return [*item[:index], walk(item[index]), *item[index + 1 :]]
        options = _retyped(item)
        return draw(st.sampled_from(options)) if options else item

    return value, walk(value)


@given(json_values, json_values)
def test_a_clone_equals_the_same_json_and_nothing_else(left: Any, right: Any) -> None:
    assert _clone(left) == left
    assert (_clone(left) == right) is (exact(left) == exact(right))
    assert (_clone(left) != right) is (exact(left) != exact(right))


@given(twisted())
def test_a_clone_tells_values_that_differ_only_in_type(pair: tuple[Any, Any]) -> None:
    original, retyped = pair
    assert (_clone(original) == retyped) is (exact(original) == exact(retyped))


class _SubclassedMessage(Message):
    """A subclass: cloned field by field (a third-party backend may return one)."""


@settings(max_examples=60, deadline=None)
@given(twisted(), st.booleans())
def test_a_message_clone_tells_an_edit_in_every_container_field(
    pair: tuple[Any, Any], subclassed: bool
) -> None:
    original, retyped = pair
    kind = _SubclassedMessage if subclassed else Message
    for name in ("content", "tool_calls", "attributes", "source", "metrics"):
        part = {"type": "text", "v": original}
        message = kind(role="user", **{name: [part] if name in ("content", "tool_calls") else part})
        clone = _clone_message(message)
        assert clone == message.__dict__
        container = getattr(message, name)
        (container[0] if isinstance(container, list) else container)["v"] = retyped
        assert (clone == message.__dict__) is (exact(original) == exact(retyped)), name


def test_zero_and_negative_zero_differ() -> None:
    assert _clone(0.0) != -0.0 and _clone(-0.0) != 0.0 and _clone(-0.0) == -0.0
    assert math.copysign(1, -0.0) < 0


async def _save_edit_save(before: Any, after: Any) -> tuple[ThreadChanges, Any, Any]:
    async with ThreadStore() as store:
        changes: list[ThreadChanges] = []
        write = store.backend.write

        async def recording(change_set: ThreadChanges) -> None:
            changes.append(change_set)
            await write(change_set)

        store.backend.write = recording  # type: ignore[method-assign,assignment]
        thread = Thread(attributes={"v": before})
        thread.add_message(Message(id="a", role="user", attributes={"v": before}))
        thread.add_message(Message(id="b", role="user", metrics={"v": before}))
        await store.save(thread)
        thread.messages[0].attributes["v"] = after
        thread.attributes["v"] = after
        await store.save(thread)
        got = await store.get(thread.id)
        assert got is not None
        return changes[-1], got.attributes["v"], got.messages[0].attributes["v"]


@settings(max_examples=60, deadline=None)
@given(st.one_of(twisted(), st.tuples(json_values, json_values)))
def test_a_save_writes_exactly_the_values_that_became_different_json(
    pair: tuple[Any, Any],
) -> None:
    before, after = pair
    changes, thread_value, message_value = asyncio.run(_save_edit_save(before, after))
    different = exact(before) != exact(after)
    assert [m.id for m in changes.changed] == (["a"] if different else [])
    assert changes.thread_changed is different
    assert not changes.added and not changes.removed
    assert exact(thread_value) == exact(after)
    assert exact(message_value) == exact(after)
