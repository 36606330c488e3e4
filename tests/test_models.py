"""Every model limit of DESIGN.md is refused with a ValidationError before anything is written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from tyler_core import Attachment, Message, Thread


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (float("nan"), "not a JSON number"),
        (float("inf"), "not a JSON number"),
        (-float("inf"), "not a JSON number"),
        (2**63, "signed 64 bits"),
        (-(2**63) - 1, "signed 64 bits"),
        ("a\x00b", "NUL"),
        ("\ud800", "lone surrogate"),
        ({1: "x"}, "non-string key"),
        ({"a\x00": 1}, "NUL"),
        (["fine", "a\x00b"], "NUL"),
        ([{"x": "\ud800"}], "lone surrogate"),
        ({"é\x00": 1}, "NUL"),
        ({1, 2}, "not a JSON value"),
        ((1, 2), "not a JSON value"),
        (b"bytes", "not a JSON value"),
        (datetime.now(UTC), "not a JSON value"),
    ],
)
def test_attribute_values_outside_json_are_refused(value: Any, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        Thread(attributes={"k": value})
    with pytest.raises(ValidationError, match=reason):
        Message(role="user", content="x", attributes={"k": value})


def test_nesting_limit_is_32_levels() -> None:
    Thread(attributes=nested(32))
    with pytest.raises(ValidationError, match="deeper than 32"):
        Thread(attributes=nested(33))


def test_int64_bounds_are_accepted() -> None:
    thread = Thread(attributes={"max": 2**63 - 1, "min": -(2**63)})
    assert thread.attributes == {"max": 2**63 - 1, "min": -(2**63)}


@pytest.mark.parametrize("bad", ["", "x" * 256, "a\x00", "\udfff"])
def test_bad_ids_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError):
        Thread(id=bad)
    with pytest.raises(ValidationError):
        Message(id=bad, role="user")


def test_ids_of_1_and_255_characters_are_accepted() -> None:
    assert Thread(id="x").id == "x"
    assert Message(id="m" * 255, role="user").id == "m" * 255


@pytest.mark.parametrize("field", ["content", "name", "title"])
@pytest.mark.parametrize("bad", ["a\x00", "\ud834"])
def test_strings_with_nul_or_lone_surrogates_are_refused(field: str, bad: str) -> None:
    model: type[Thread | Message] = Thread if field == "title" else Message
    data = {field: bad} if field == "title" else {"role": "user", field: bad}
    with pytest.raises(ValidationError):
        model.model_validate(data)


def test_invalid_role_is_refused() -> None:
    with pytest.raises(ValidationError, match="role"):
        Message.model_validate({"role": "robot"})


def test_tool_message_needs_tool_call_id() -> None:
    with pytest.raises(ValidationError, match="tool_call_id"):
        Message(role="tool", content="result")
    assert Message(role="tool", content="result", tool_call_id="c1").tool_call_id == "c1"


def test_duplicate_message_ids_are_refused() -> None:
    with pytest.raises(ValidationError, match="two messages have the id"):
        Thread(messages=[Message(id="a", role="user"), Message(id="a", role="assistant")])


def test_duplicate_sequences_are_refused() -> None:
    with pytest.raises(ValidationError, match="sequence"):
        Thread(
            messages=[
                Message(role="user", sequence=1),
                Message(role="assistant", sequence=1),
            ]
        )


def test_negative_sequence_is_refused() -> None:
    with pytest.raises(ValidationError):
        Message(role="user", sequence=-1)


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="extra"):
        Message(role="user", colour="red")  # type: ignore[call-arg]


def test_datetimes_become_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    aware = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=plus_two)
    naive = datetime(2024, 5, 1, 12, 0, 0, 654321)
    thread = Thread(created_at=aware, updated_at=naive)
    assert thread.created_at == aware
    assert thread.created_at.tzinfo is UTC
    assert thread.created_at.hour == 10
    assert thread.updated_at == naive.replace(tzinfo=UTC)
    assert Message(role="user", timestamp=naive).timestamp.tzinfo is UTC


def test_add_message_assigns_sequences_and_puts_system_first() -> None:
    thread = Thread()
    thread.add_message(Message(role="user", content="one"))
    thread.add_message(Message(role="assistant", content="two"))
    thread.add_message(Message(role="system", content="rules"))
    assert [(m.role, m.sequence) for m in thread.messages] == [
        ("system", 0),
        ("user", 1),
        ("assistant", 2),
    ]
    assert [m.content for m in thread.get_messages_in_sequence()] == ["rules", "one", "two"]


def test_messages_without_sequences_get_them_in_order() -> None:
    thread = Thread(messages=[Message(role="user"), Message(role="assistant")])
    assert [m.sequence for m in thread.messages] == [1, 2]


def test_mutating_methods_move_updated_at_forward() -> None:
    past = datetime(2020, 1, 1, tzinfo=UTC)
    thread = Thread(updated_at=past)
    thread.add_message(Message(role="user", content="hi"))
    assert thread.updated_at > past


def test_reactions_keep_order_and_disappear_when_empty() -> None:
    thread = Thread()
    message = Message(role="assistant", content="hello")
    thread.add_message(message)
    assert thread.add_reaction(message.id, "👍", "u2")
    assert thread.add_reaction(message.id, "👍", "u1")
    assert not thread.add_reaction(message.id, "👍", "u1")
    assert thread.add_reaction(message.id, "🎉", "u1")
    assert thread.get_reactions(message.id) == {"👍": ["u2", "u1"], "🎉": ["u1"]}
    assert thread.remove_reaction(message.id, "🎉", "u1")
    assert not thread.remove_reaction(message.id, "🎉", "u1")
    assert thread.get_reactions(message.id) == {"👍": ["u2", "u1"]}
    assert not thread.add_reaction("missing", "👍", "u1")
    assert thread.get_reactions("missing") == {}


def test_get_reactions_returns_a_copy() -> None:
    thread = Thread()
    message = Message(role="assistant", content="hello")
    thread.add_message(message)
    thread.add_reaction(message.id, "👍", "u1")
    thread.get_reactions(message.id)["👍"].append("intruder")
    assert thread.get_reactions(message.id) == {"👍": ["u1"]}


def test_lookup_helpers() -> None:
    thread = Thread()
    first = Message(role="user", content="a")
    second = Message(role="user", content="b")
    thread.add_message(first)
    thread.add_message(Message(role="assistant", content="c"))
    thread.add_message(second)
    assert thread.get_message_by_id(first.id) is first
    assert thread.get_message_by_id("nope") is None
    assert thread.get_last_message_by_role("user") is second
    assert thread.get_last_message_by_role("tool") is None
    thread.clear_messages()
    assert thread.messages == []


def test_attachment_is_metadata_only() -> None:
    attachment = Attachment(filename="a.png", mime_type="image/png", size=10)
    assert attachment.status == "pending"
    with pytest.raises(ValidationError):
        Attachment(filename="a.png", size=-1)
    with pytest.raises(ValidationError):
        Attachment(filename="a.png", content=b"bytes")  # type: ignore[call-arg]


def _reference_highest(messages: list[Message]) -> int:
    return max((m.sequence or 0 for m in messages if m.role != "system"), default=0)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["system", "user", "assistant"]),
            st.none() | st.integers(0, 40),
        ),
        max_size=8,
    )
)
def test_add_message_continues_from_the_highest_stored_sequence(
    existing: list[tuple[str, int | None]],
) -> None:
    # Whatever the list holds (system messages with high sequences, gaps, None, any order),
    # a new message gets the highest sequence of the non-system messages + 1.
    thread = Thread()
    for role, sequence in existing:
        message = Message(role="user")
        message.role = role  # type: ignore[assignment]
        message.sequence = sequence
        thread.messages.append(message)
    expected = _reference_highest(thread.messages) + 1
    thread.add_message(Message(role="user"))
    assert thread.messages[-1].sequence == expected
