"""The sample threads that ``tyler-store demo`` saves: sources, attributes, tool calls, an
attachment and reactions, so every query the demo prints has something to find."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tyler_core.models import Attachment, Message, Thread, utc_now

__all__ = ["demo_threads"]


def demo_threads() -> list[Thread]:
    start = utc_now() - timedelta(hours=3)
    specs: list[tuple[str, str | None, dict[str, Any] | None, dict[str, Any]]] = [
        (
            "Refund for order 1042",
            "slack",
            {"channel": "C-support", "thread_ts": "1718.01"},
            {"customer": "acme", "priority": "high", "tags": ["billing"]},
        ),
        (
            "Onboarding questions",
            "slack",
            {"channel": "C-sales", "thread_ts": "1718.02"},
            {"customer": "globex", "priority": "low"},
        ),
        (
            "Nightly report failed",
            "github",
            {"repo": "acme/etl", "issue": 77},
            {"customer": "acme", "priority": "high", "tags": ["ops"]},
        ),
        ("Quick translation", None, None, {"customer": "initech", "priority": "low"}),
    ]
    threads = []
    for index, (title, source, props, attributes) in enumerate(specs):
        thread = Thread(
            title=title,
            attributes=attributes,
            source=None if source is None else {"name": source, **(props or {})},
            created_at=start + timedelta(minutes=10 * index),
        )
        thread.add_message(Message(role="system", content="You are a helpful support agent."))
        user = Message(role="user", content=f"Hello, I need help with: {title.lower()}.")
        thread.add_message(user)
        reply = Message(
            role="assistant",
            content="Of course. Let me look into it.",
            tool_calls=[
                {
                    "id": f"call_{index}",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": "{}"},
                }
            ],
            metrics={"model": "demo-model", "usage": {"prompt_tokens": 42, "completion_tokens": 9}},
        )
        thread.add_message(reply)
        thread.add_message(
            Message(role="tool", tool_call_id=f"call_{index}", name="lookup", content="found")
        )
        if index % 2 == 0:
            user.attachments.append(
                Attachment(
                    filename="screenshot.png",
                    mime_type="image/png",
                    size=48213,
                    storage_path=f"files/{thread.id}/screenshot.png",
                    status="stored",
                )
            )
        thread.add_reaction(reply.id, "👍", "user-1")
        thread.add_reaction(reply.id, "👍", "user-2")
        threads.append(thread)
    return threads
