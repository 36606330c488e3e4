"""The stateful test: random operation sequences must get the same answers from the backend under
test as from the reference :class:`~tyler_core.memory.MemoryBackend`.

Both stores share one frozen :class:`ManualClock` that the machine moves explicitly, so their
timestamps agree (and ties happen). Every answer is compared with :func:`exact`, which keeps
``1``, ``1.0`` and ``True`` apart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test

from tyler_core.models import Message, Thread
from tyler_core.store import ThreadStore
from tyler_core.testing.base import ConformanceBase, exact, fresh_namespace
from tyler_core.testing.clock import ManualClock

__all__ = ["StatefulTests"]

IDS = st.sampled_from(["a", "B", "b", "é", "10", "9"])
ATTRIBUTES: list[dict[str, Any]] = [
    {},
    {"k": 1},
    {"k": 1.0},
    {"k": True},
    {"k": "1"},
    {"k": None},
    {"k": {"x": [1, None]}},
    {"k": 1, "j": "x"},
    {"j": "x"},
]
SOURCES: list[dict[str, Any] | None] = [
    None,
    {"name": "slack", "channel": "C1"},
    {"name": "slack", "channel": "C2", "n": 1},
    {"name": "email", "channel": "C1"},
    {"channel": "C1"},
]
QUERIES = st.sampled_from([q for q in ATTRIBUTES if q])
SOURCE_QUERIES = st.sampled_from(
    [("slack", {}), ("slack", {"channel": "C1"}), ("email", {}), ("slack", {"n": 1.0}), ("x", {})]
)
LIMITS = st.sampled_from([None, 0, 1, 2, 5])
OFFSETS = st.sampled_from([0, 1, 3])
EDITS = st.sampled_from(
    ["add", "add_system", "edit_nested", "remove_first", "title", "attrs", "react", "clear"]
)
T0 = datetime(2024, 3, 1, 12, 0, 0, 500001, tzinfo=UTC)

Outcome = tuple[str, Any]


class _StoreMachine(RuleBasedStateMachine):
    """Runs each rule on the store under test and on a memory store; requires equal answers."""

    def __init__(self, suite: ConformanceBase, runner: asyncio.Runner) -> None:
        super().__init__()
        self.runner = runner
        self.clock = ManualClock(T0, frozen=True)
        self.tested = runner.run(suite.open_store(fresh_namespace(), clock=self.clock))
        self.reference = runner.run(
            ThreadStore.create("memory://", namespace="reference", clock=self.clock)
        )
        # The last objects each store returned or saved, per thread id.
        self.held: dict[str, tuple[Thread, Thread]] = {}
        self.counter = 0

    def teardown(self) -> None:
        async def close() -> None:
            try:
                await self.tested.backend.purge()
                await self.tested.backend.drop()
            finally:
                await self.tested.close()
                await self.reference.close()

        self.runner.run(close())

    # -- plumbing ---------------------------------------------------------------------------------

    def both(self, call: Callable[[ThreadStore, int], Awaitable[Any]]) -> tuple[Outcome, Outcome]:
        """Run ``call(store, index)`` on both stores; return their outcomes, required equal."""

        async def outcome(store: ThreadStore, index: int) -> Outcome:
            try:
                return ("ok", exact(await call(store, index)))
            except Exception as exc:
                return ("error", type(exc).__name__)

        tested = self.runner.run(outcome(self.tested, 0))
        reference = self.runner.run(outcome(self.reference, 1))
        assert tested == reference, f"the backend answered {tested!r}, memory {reference!r}"
        return tested, reference

    def new_message(self, role: str = "user") -> Message:
        self.counter += 1
        return Message.model_validate(
            {
                "id": f"m{self.counter}",
                "role": role,
                "content": f"text {self.counter}",
                "timestamp": T0 + timedelta(microseconds=self.counter),
                "attributes": {"n": self.counter, "f": self.counter / 4},
            }
        )

    def pair(self, thread: Thread) -> tuple[Thread, Thread]:
        return thread.model_copy(deep=True), thread.model_copy(deep=True)

    # -- rules ------------------------------------------------------------------------------------

    @rule(ms=st.sampled_from([0, 0, 1, 1000]))
    def tick(self, ms: int) -> None:
        self.clock.advance(timedelta(milliseconds=ms))

    @rule(tid=IDS, attributes=st.sampled_from(ATTRIBUTES), source=st.sampled_from(SOURCES))
    def save_new(self, tid: str, attributes: dict[str, Any], source: dict[str, Any] | None) -> None:
        thread = Thread(id=tid, title=f"t {tid}", created_at=T0, attributes=attributes)
        thread.source = source
        thread.messages = [self.new_message(), self.new_message("assistant")]
        pair = self.pair(thread)
        result, _ = self.both(lambda store, i: store.save(pair[i]))
        if result[0] == "ok":
            self.held[tid] = pair

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data(), edit=EDITS)
    def edit_and_save(self, data: st.DataObject, edit: str) -> None:
        tid = data.draw(st.sampled_from(sorted(self.held)))
        pair = self.held[tid]
        extra = self.new_message("system" if edit == "add_system" else "user")
        for thread in pair:
            apply_edit(thread, edit, extra.model_copy(deep=True))
        result, _ = self.both(lambda store, i: store.save(pair[i]))
        if result[0] != "ok":
            self.reload(tid)

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data())
    def stale_save(self, data: st.DataObject) -> None:
        tid = data.draw(st.sampled_from(sorted(self.held)))
        copies = self.pair(self.held[tid][0])
        for copy in copies:
            copy.version = max(copy.version - 1, 0)
            copy.title = "stale"
        self.both(lambda store, i: store.save(copies[i]))

    @rule(tid=IDS, count=st.integers(0, 3), system=st.booleans())
    def append(self, tid: str, count: int, system: bool) -> None:
        messages = [self.new_message() for _ in range(count)]
        if system:
            messages.insert(0, self.new_message("system"))
        self.both(lambda store, i: store.append(tid, *(m.model_copy() for m in messages)))

    @rule(tid=IDS)
    def delete(self, tid: str) -> None:
        self.both(lambda store, i: store.delete(tid))

    @rule(tid=IDS)
    def reload(self, tid: str) -> None:
        got: list[Thread | None] = [None, None]

        async def get(store: ThreadStore, index: int) -> Thread | None:
            got[index] = await store.get(tid)
            return got[index]

        self.both(get)
        if got[0] is not None and got[1] is not None:
            self.held[tid] = (got[0], got[1])
        else:
            self.held.pop(tid, None)

    @rule(limit=LIMITS, offset=OFFSETS)
    def list_page(self, limit: int | None, offset: int) -> None:
        self.both(lambda store, i: store.list(limit=5 if limit is None else limit, offset=offset))
        self.both(lambda store, i: store.list_recent(limit))

    @rule(query=QUERIES, limit=LIMITS, offset=OFFSETS)
    def find_by_attributes(self, query: dict[str, Any], limit: int | None, offset: int) -> None:
        self.both(lambda store, i: store.find_by_attributes(query, limit=limit, offset=offset))

    @rule(query=SOURCE_QUERIES, limit=LIMITS)
    def find_by_source(self, query: tuple[str, dict[str, Any]], limit: int | None) -> None:
        self.both(lambda store, i: store.find_by_source(query[0], query[1], limit=limit))

    @rule()
    def count(self) -> None:
        self.both(lambda store, i: store.count())
        self.both(lambda store, i: store.list_threads(limit=3))


def apply_edit(thread: Thread, edit: str, extra: Message) -> None:
    """Change ``thread`` in place the way an application would."""
    stored = [m for m in thread.messages if m.role != "system"]
    if edit in ("add", "add_system"):
        thread.add_message(extra)
    elif edit == "edit_nested" and stored:
        stored[0].attributes.setdefault("nested", {"x": 0})["x"] = extra.attributes["n"]
    elif edit == "remove_first" and stored:
        thread.messages.remove(stored[0])
    elif edit == "title":
        thread.title = f"title {extra.id}"
    elif edit == "attrs":
        thread.attributes["k"] = extra.attributes["n"] % 2 == 0 or None
    elif edit == "react" and stored:
        thread.add_reaction(stored[-1].id, "👍", extra.id)
    elif edit == "clear":
        thread.clear_messages()
    thread.updated_at = T0  # the model's own methods read the real clock; keep stores equal


class StatefulTests(ConformanceBase):
    """The Hypothesis comparison against the memory backend."""

    def test_random_operations_match_the_memory_backend(self, tyler_url: str | None) -> None:
        """Sync on purpose: Hypothesis drives the examples, each in this test's own loop."""
        self._tyler_url = tyler_url
        machine_settings = settings(
            max_examples=self.stateful_examples,
            stateful_step_count=self.stateful_steps,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            # Shrinking reruns the machine thousands of times: minutes on a slow backend.
            phases=tuple(Phase) if self.stateful_shrink else tuple(set(Phase) - {Phase.shrink}),
        )
        with asyncio.Runner() as runner:
            # Hypothesis accepts any factory of machines; its stub asks for the class.
            run_state_machine_as_test(
                lambda: _StoreMachine(self, runner),  # type: ignore[arg-type]
                settings=machine_settings,
            )
