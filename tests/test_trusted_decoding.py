"""Trusted decoding (``context=TRUSTED``) gives exactly what full validation gives for data the
library wrote, skips the value checks, and leaves every other validation as it was."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError, ValidationInfo, field_validator

from tyler_core import Attachment, Message, Thread, models, set_incarnation
from tyler_core.jsonvalues import INT64_MAX, INT64_MIN
from tyler_core.models import TRUSTED, decode_trusted_messages

_STAMP = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def assert_same(trusted: BaseModel, full: BaseModel) -> None:
    """Equal, and equal in everything ``==`` forgives: the repr tells ``1`` from ``1.0`` and
    ``True``, and ``datetime.UTC`` from pydantic's own UTC tzinfo."""
    assert type(trusted) is type(full)
    assert trusted == full
    assert repr(trusted) == repr(full)
    assert trusted.model_fields_set == full.model_fields_set
    assert trusted.__pydantic_private__ == full.__pydantic_private__
    assert trusted.__pydantic_extra__ == full.__pydantic_extra__


def decoded_both_ways(model: type[BaseModel], document: str) -> tuple[Any, Any]:
    """``document`` decoded as trusted data, then fully validated."""
    return model.model_validate_json(document, context=TRUSTED), model.model_validate_json(document)


MESSAGES = [
    Message(id="m1", role="user", sequence=1, content="hello", timestamp=_STAMP),
    Message(
        role="assistant",
        sequence=2,
        content=[
            {"type": "text", "text": "look: ✓ café 🎉"},
            {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
        ],
        name="helper",
        tool_calls=[
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
        metrics={"tokens": 40, "latency": 0.25, "cached": False, "ratio": 1.0},
    ),
    Message(role="tool", sequence=3, tool_call_id="call_1", content='{"ok": true}'),
    Message(role="system", sequence=0, content="be brief", source={"name": "slack", "n": 1}),
    Message(
        role="user",
        content=None,
        attributes={
            "int": 1,
            "float": 1.0,
            "bool": True,
            "none": None,
            "big": INT64_MAX,
            "small": INT64_MIN,
            "nested": {"list": [1, 1.5, "x", [True, None]], "ü": {"深": "値"}},
        },
        attachments=[
            Attachment(filename="a.txt"),
            Attachment(
                filename="b.png",
                mime_type="image/png",
                file_id="f1",
                storage_path="/files/b.png",
                storage_backend="local",
                status="stored",
                size=12,
                attributes={"w": 640, "h": 480.0},
            ),
        ],
        reactions={"👍": ["u1", "u2"], "🎉": ["u3"]},
    ),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.role)
def test_trusted_messages_equal_fully_validated_ones(message: Message) -> None:
    trusted, full = decoded_both_ways(Message, message.model_dump_json())
    assert_same(trusted, full)
    assert trusted == message and repr(trusted) == repr(message)
    assert trusted.timestamp.tzinfo is UTC
    assert all(type(a) is Attachment for a in trusted.attachments)


def test_a_list_of_trusted_messages_decodes_as_each_one_does() -> None:
    documents = [message.model_dump_json() for message in MESSAGES]
    decoded = decode_trusted_messages("[" + ",".join(documents) + "]")
    assert len(decoded) == len(MESSAGES)
    for document, message in zip(documents, decoded, strict=True):
        one = Message.model_validate_json(document, context=TRUSTED)
        assert_same(message, one)
        assert message.__pydantic_fields_set__ == one.__pydantic_fields_set__
        assert message.timestamp.tzinfo is UTC
    assert decode_trusted_messages("[]") == []
    with pytest.raises(ValidationError):  # types still hold
        decode_trusted_messages('[{"role": "user"}, {"role": "robot", "content": "x"}]')


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("2026-01-02T03:04:05.678901Z", _STAMP),
        ("2026-01-02T03:04:05.678901+00:00", _STAMP),
        ("2026-01-02T05:04:05.678901+02:00", _STAMP),
        ("2026-01-01T22:04:05.678901-05:00", _STAMP),
        ("2026-01-02T03:04:05.678901", _STAMP),  # naive: taken as UTC
        ("2026-01-02 03:04:05.678901Z", _STAMP),
    ],
)
def test_trusted_timestamps_are_utc_like_validated_ones(written: str, expected: datetime) -> None:
    document = json.dumps({"id": "m1", "role": "user", "timestamp": written})
    trusted, full = decoded_both_ways(Message, document)
    assert_same(trusted, full)
    assert trusted.timestamp == expected
    assert trusted.timestamp.tzinfo is UTC


def test_a_document_without_optional_keys_gets_the_same_defaults() -> None:
    document = '{"role": "user", "content": "hi", "timestamp": "2026-01-02T03:04:05Z"}'
    trusted, full = decoded_both_ways(Message, document)
    assert trusted.model_dump(exclude={"id"}) == full.model_dump(exclude={"id"})
    assert trusted.model_fields_set == full.model_fields_set == {"role", "content", "timestamp"}
    assert len(trusted.id) == 36 and trusted.id != full.id  # a fresh uuid each time
    assert (trusted.attachments, trusted.reactions, trusted.attributes) == ([], {}, {})
    again = Message.model_validate_json(document, context=TRUSTED)
    assert again.attachments is not trusted.attachments  # factories, not a shared default
    assert again.reactions is not trusted.reactions
    no_time = Message.model_validate_json('{"role": "user"}', context=TRUSTED)
    assert no_time.timestamp.tzinfo is UTC


def test_backend_documents_decode_the_same() -> None:
    # As the SQL backend writes them: every key, explicit nulls, escapes, numbers as text.
    document = (
        '{"id":"m7","role":"assistant","sequence":7,"content":"caf\\u00e9 \\ud83c\\udf89",'
        '"name":null,"tool_call_id":null,"tool_calls":null,'
        '"attributes":{"a":1,"b":1.0,"c":true,"d":[1e3,-0.0]},'
        '"timestamp":"2026-01-02T03:04:05.678901+00:00","source":null,"metrics":{}}'
    )
    trusted, full = decoded_both_ways(Message, document)
    assert_same(trusted, full)
    assert trusted.content == "café 🎉"
    assert trusted.attributes == {"a": 1, "b": 1.0, "c": True, "d": [1000.0, -0.0]}


def test_trusted_thread_headers_keep_their_private_attributes() -> None:
    thread = Thread(
        id="t1",
        title="Thread ✓",
        attributes={"customer": "c1", "n": 2, "x": 2.0},
        source={"name": "slack"},
        created_at=_STAMP,
        updated_at=_STAMP + timedelta(seconds=1),
        version=3,
    )
    trusted, full = decoded_both_ways(Thread, thread.model_dump_json(exclude={"messages"}))
    assert_same(trusted, full)
    assert trusted.__pydantic_private__ == {"_incarnation": None}
    assert trusted.incarnation is None
    assert set_incarnation(trusted, "abc").incarnation == "abc"
    assert trusted.created_at.tzinfo is UTC and trusted.updated_at.tzinfo is UTC
    bare = Thread.model_validate_json('{"id": "t1"}', context=TRUSTED)
    assert (bare.title, bare.messages, bare.version, bare.incarnation) == (
        "Untitled Thread",
        [],
        0,
        None,
    )
    assert bare.created_at.tzinfo is UTC and bare.messages is not trusted.messages


def test_trusted_threads_with_messages_equal_validated_ones() -> None:
    thread = Thread(id="t2", messages=[m.model_copy(deep=True) for m in MESSAGES])
    trusted, full = decoded_both_ways(Thread, thread.model_dump_json())
    assert_same(trusted, full)
    for got, expected in zip(trusted.messages, full.messages, strict=True):
        assert_same(got, expected)


def test_trusted_python_input_equals_validated_input() -> None:
    # As the Mongo backend reads a header: a dict of JSON values and datetimes.
    data = {
        "id": "t3",
        "title": "x",
        "created_at": "2026-01-02T05:04:05.678901+02:00",
        "updated_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-1))),
        "attributes": {"k": [1, 1.0, True]},
        "version": 2,
    }
    trusted = Thread.model_validate(data, context=TRUSTED)
    assert_same(trusted, Thread.model_validate(data))
    assert trusted.updated_at.tzinfo is UTC and trusted.updated_at.hour == 4
    message = {"id": "m1", "role": "user", "timestamp": _STAMP.replace(tzinfo=None)}
    assert_same(Message.model_validate(message, context=TRUSTED), Message.model_validate(message))


def test_trusted_attachments_equal_validated_ones() -> None:
    document = Attachment(filename="f", size=3, attributes={"p": 1.5}).model_dump_json()
    assert_same(*decoded_both_ways(Attachment, document))


_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=6)
_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(INT64_MIN, INT64_MAX)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_text, children, max_size=3),
    max_leaves=10,
)


@given(
    attributes=st.dictionaries(_text, _json_values, max_size=4),
    content=st.none() | _text,
    seconds=st.integers(0, 10**9),
    offset=st.integers(-14 * 60, 14 * 60),
)
def test_any_valid_message_decodes_the_same_trusted(
    attributes: dict[str, Any], content: str | None, seconds: int, offset: int
) -> None:
    zone = timezone(timedelta(minutes=offset))
    stamp = datetime(2000, 1, 1, tzinfo=zone) + timedelta(seconds=seconds, microseconds=seconds)
    message = Message(role="user", content=content, attributes=attributes, timestamp=stamp)
    document = json.dumps(message.model_dump(mode="json") | {"timestamp": stamp.isoformat()})
    assert_same(*decoded_both_ways(Message, document))


def test_trusted_decoding_calls_no_value_check(monkeypatch: pytest.MonkeyPatch) -> None:
    def checked(info: ValidationInfo) -> bool:
        raise RuntimeError("a value check was called")

    # Attachments are left out: pydantic-core reuses Attachment's own validator (see decoding).
    thread = Thread(id="t4", messages=[m.model_copy(deep=True) for m in MESSAGES[:4]])
    monkeypatch.setattr(models, "_trusted", checked)
    Thread.model_validate_json(thread.model_dump_json(), context=TRUSTED)
    Thread.model_validate(thread.model_dump(), context=TRUSTED)
    with pytest.raises(RuntimeError):
        Message.model_validate_json(MESSAGES[0].model_dump_json())


def test_trusted_decoding_skips_the_value_checks() -> None:
    document = json.dumps({"id": "", "role": "user", "content": "a\x00b", "reactions": {"x": []}})
    message = Message.model_validate_json(document, context=TRUSTED)
    assert message.content == "a\x00b" and message.id == ""
    with pytest.raises(ValidationError, match="NUL"):
        Message.model_validate_json(document)


@pytest.mark.parametrize("context", [None, {}, {"other": True}, {"tyler_trusted": 1}])
def test_untrusted_input_is_fully_validated(context: dict[str, Any] | None) -> None:
    for document in (
        '{"role": "user", "content": "a\\u0000b"}',
        '{"role": "user", "attributes": {"k": "\\ud800"}}',
        '{"id": "", "role": "user"}',
        '{"role": "user", "reactions": {"\\u0000": ["u"]}}',
        '{"role": "tool", "content": "x"}',
    ):
        with pytest.raises(ValidationError):
            Message.model_validate_json(document, context=context)
        with pytest.raises(ValidationError):
            Message.model_validate(json.loads(document), context=context)


@pytest.mark.parametrize(
    "document",
    [
        '{"role": "robot"}',
        '{"role": "user", "colour": "red"}',
        '{"role": "user", "sequence": -1}',
        '{"role": "user", "timestamp": "yesterday"}',
    ],
)
def test_trusted_decoding_still_checks_types_and_invariants(document: str) -> None:
    with pytest.raises(ValidationError) as trusted:
        Message.model_validate_json(document, context=TRUSTED)
    with pytest.raises(ValidationError) as full:
        Message.model_validate_json(document)
    assert str(trusted.value) == str(full.value)  # the same errors, under the same title


def test_trusted_decoding_skips_the_invariants_a_write_checked() -> None:
    # What a backend reads back was checked when it was written: a read pays for neither check.
    tool = '{"id": "m1", "role": "tool", "content": "x"}'
    assert Message.model_validate_json(tool, context=TRUSTED).tool_call_id is None
    twice = f'{{"id": "t", "messages": [{tool}, {tool}]}}'
    thread = Thread.model_validate_json(twice, context=TRUSTED)
    assert [m.id for m in thread.messages] == ["m1", "m1"]
    assert [m.sequence for m in thread.messages] == [None, None]  # none assigned either
    with pytest.raises(ValidationError, match="tool_call_id"):
        Message.model_validate_json(tool)
    fixed = twice.replace('"content"', '"tool_call_id": "c", "content"')
    with pytest.raises(ValidationError, match="two messages have the id"):
        Thread.model_validate_json(fixed)
    with pytest.raises(ValidationError, match="two messages have the id"):
        Thread.model_validate(json.loads(fixed), context={"tyler_trusted": 1})


class ShoutingMessage(Message):
    """A user's subclass whose validator takes the info and changes values even when trusted."""

    @field_validator("content")
    @classmethod
    def _shout(cls, value: Any, info: ValidationInfo) -> Any:
        return value.upper() if isinstance(value, str) else value


def test_a_subclass_keeps_its_own_validators_when_trusted() -> None:
    document = '{"role": "user", "content": "hi", "attributes": {"k": "a\\u0000"}}'
    message = ShoutingMessage.model_validate_json(document, context={"tyler_trusted": True})
    assert type(message) is ShoutingMessage
    assert message.content == "HI"
    assert type(ShoutingMessage.model_validate({"role": "user"}, context=TRUSTED)) is (
        ShoutingMessage
    )
    with pytest.raises(ValidationError, match="NUL"):
        ShoutingMessage.model_validate_json(document)
