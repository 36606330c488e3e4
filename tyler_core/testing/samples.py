"""Sample data for the suite: threads and JSON values that stores tend to mangle."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from tyler_core.models import Attachment, Message, Thread

__all__ = [
    "JSON_FIELDS",
    "NUMBERS",
    "T0",
    "TRICKY_JSON",
    "json_fields_of",
    "message",
    "numbers_thread",
    "plain_thread",
    "rich_thread",
]

#: A fixed instant with microseconds, for data that must round-trip exactly.
T0 = datetime(2024, 2, 29, 23, 59, 58, 123457, tzinfo=UTC)
_PLUS_0530 = timezone(timedelta(hours=5, minutes=30))
_MINUS_08 = timezone(timedelta(hours=-8))

#: JSON values that stores like to change: int/float/bool/None kept apart, big and small
#: numbers, nested containers, unicode in keys and values.
TRICKY_JSON: dict[str, Any] = {
    "int": 1,
    "float": 1.0,
    "bool": True,
    "null": None,
    "zero": 0,
    "false": False,
    "big_float": 1e16,
    "tenth": 0.1,
    "precise": 123456789.12345679,
    "tiny": 5e-324,
    "negative": -2.5,
    "int64_max": 2**63 - 1,
    "int64_min": -(2**63),
    "empty_list": [],
    "empty_object": {},
    "empty_string": "",
    "list": [1, 1.0, True, None, "1", [2, [3.5]], {"k": False}],
    "nested": {"a": {"b": {"c": [1, {"d": "deep"}]}}},
    "unicode": "ключ 🔑 שלום مرحبا e\u0301 \u200b\t\n\r\"'\\",
    "ключ 🔑": "key with unicode",
    "with.dot": 1,
    "$dollar": 2,
    "quo'te\"s": 3,
}


#: Numbers that a JSON column or a JSON library likes to turn into others: whole-number floats
#: (JSONB and some decoders make them ints), ``-0.0``, the int64 limits (doubles lose them),
#: booleans next to 0 and 1.
NUMBERS: dict[str, Any] = {
    "one_float": 1.0,
    "two_float": 2.0,
    "zero_float": 0.0,
    "minus_zero": -0.0,
    "big_float": 1e16,
    "huge_float": 1e300,
    "int_one": 1,
    "int_zero": 0,
    "true": True,
    "false": False,
    "int64_max": 2**63 - 1,
    "int64_min": -(2**63),
    "beyond_double": 2**53 + 1,
    "list": [1.0, 1, True, 0.0, 0, False, -0.0, 1e16, 2**63 - 1],
    "nested": {"a": [{"b": 3.0, "c": 3}]},
}


def message(role: str = "user", content: Any = "hello", **fields: Any) -> Message:
    """A message with the given fields (``id`` defaults to a fresh uuid)."""
    return Message.model_validate({"role": role, "content": content, **fields})


def plain_thread(
    thread_id: str | None = None,
    *,
    attributes: Mapping[str, Any] | None = None,
    source: Mapping[str, Any] | None = None,
    messages: int = 1,
    title: str = "plain",
) -> Thread:
    """A small thread with ``messages`` user messages."""
    thread = Thread(
        title=title,
        attributes=dict(attributes or {}),
        source=dict(source) if source is not None else None,
        **({} if thread_id is None else {"id": thread_id}),
    )
    for number in range(messages):
        thread.add_message(message(content=f"message {number}"))
    return thread


def rich_thread(thread_id: str | None = None) -> Thread:
    """A thread that uses every field of every model, with values stores tend to mangle."""
    thread = Thread(
        title="Planung 📅 — שלום עולם — 你好",
        created_at=datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=_PLUS_0530),
        attributes=dict(TRICKY_JSON),
        source={"name": "slack", "channel": "C123", "thread_ts": "1712345678.000100", "n": 1},
        **({} if thread_id is None else {"id": thread_id}),
    )
    thread.add_message(message("system", "You are helpful.", id="sys"))
    thread.add_message(
        message(
            "user",
            "Hi 👋🏽 مرحبا — ünïcödé\nline two\ttab",
            id="u1",
            name="alice",
            timestamp=datetime(2024, 1, 1, 12, 0, 0, 1, tzinfo=_MINUS_08),
            attributes={"lang": "ar", "scores": [0.1, 1e16, 1, True, None]},
            source={"name": "slack", "ts": "1712345678.000100", "user": {"id": "U1"}},
            reactions={"👍": ["bob", "alice", "carol"], "🎉": ["dave"], "+1": ["erin"]},
            attachments=[
                Attachment(
                    filename="report ✓.pdf",
                    mime_type="application/pdf",
                    file_id="f-1",
                    storage_path="/files/2024/report.pdf",
                    storage_backend="local",
                    status="stored",
                    size=2**40,
                    attributes={"pages": 12, "ocr": {"confidence": 0.97, "ok": True}},
                ),
                Attachment(filename="pending.png"),
            ],
        )
    )
    thread.add_message(
        message(
            "assistant",
            "",
            id="a1",
            tool_calls=[
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q": "weather", "n": 1}'},
                }
            ],
            metrics={"model": "gpt-x", "usage": {"prompt_tokens": 12, "total": 40}, "ms": 12.5},
        )
    )
    thread.add_message(message("tool", '{"temp": 21.5}', id="t1", tool_call_id="call_1"))
    thread.add_message(
        message(
            "user",
            [
                {"type": "text", "text": "look at this"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
            id="parts",
        )
    )
    thread.add_message(Message(role="assistant", content=None, id="none-content"))
    return thread


#: Every JSON-holding field the suite checks in :func:`numbers_thread`.
JSON_FIELDS = (
    "thread.attributes",
    "thread.source",
    "message.attributes",
    "message.source",
    "message.metrics",
    "message.tool_calls",
    "message.content",
    "attachment.attributes",
)


def numbers_thread(values: Mapping[str, Any] = NUMBERS) -> Thread:
    """A thread carrying ``values`` in every field of :data:`JSON_FIELDS`, so a store that
    converts numbers in any one of them shows which."""
    thread = Thread(attributes=dict(values), source={"name": "numbers", **values})
    thread.add_message(
        message(
            "user",
            [{"type": "text", "text": "numbers", **values}],
            id="parts",
            attributes=dict(values),
            source={"name": "numbers", **values},
            attachments=[Attachment(filename="numbers.json", attributes=dict(values))],
        )
    )
    thread.add_message(
        message(
            "assistant",
            "",
            id="calls",
            tool_calls=[{"id": "call_1", "type": "function", "values": dict(values)}],
            metrics=dict(values),
        )
    )
    return thread


def json_fields_of(thread: Thread) -> dict[str, Any]:
    """The values of :data:`JSON_FIELDS` in ``thread`` (its first messages), by field name."""
    parts, calls = thread.messages[0], thread.messages[1]
    return {
        "thread.attributes": thread.attributes,
        "thread.source": thread.source,
        "message.attributes": parts.attributes,
        "message.source": parts.source,
        "message.metrics": calls.metrics,
        "message.tool_calls": calls.tool_calls,
        "message.content": parts.content,
        "attachment.attributes": parts.attachments[0].attributes if parts.attachments else None,
    }
