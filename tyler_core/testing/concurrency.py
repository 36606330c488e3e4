"""Rules 3 and 9: ``append``, and many tasks (and store instances) writing at once.

Each concurrent test runs under ``asyncio.timeout(deadlock_timeout)`` so that a deadlock fails the
test instead of hanging the run.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tyler_core.errors import ConcurrencyError, ThreadNotFoundError
from tyler_core.models import Message, Thread
from tyler_core.store import ThreadStore
from tyler_core.testing.base import ConformanceBase, exact, requires
from tyler_core.testing.clock import ManualClock
from tyler_core.testing.samples import message, plain_thread

__all__ = ["ConcurrencyTests"]


class ConcurrencyTests(ConformanceBase):
    """``append`` semantics and concurrent writers."""

    # -- append -----------------------------------------------------------------------------------

    @pytest.mark.asyncio(loop_scope="function")
    async def test_append_assigns_sequences_after_the_highest(
        self, store: ThreadStore, clock: ManualClock
    ) -> None:
        thread = plain_thread(messages=0)
        for sequence in (1, 2, 5):
            thread.messages.append(message(content=str(sequence), sequence=sequence))
        await store.save(thread)
        first = message(content="six", sequence=99, attributes={"k": [1, 1.0, True]})
        second = message(content="seven", sequence=None)
        expected_time = clock.now
        added = await store.append(thread.id, first, second)
        assert [m.sequence for m in added] == [6, 7]
        assert [m.id for m in added] == [first.id, second.id]
        got = await self.must_get(store, thread.id)
        assert [m.sequence for m in got.messages] == [1, 2, 5, 6, 7]
        assert exact(got.messages[3:]) == exact(added)
        assert got.version == 2
        assert got.updated_at == expected_time

    @pytest.mark.asyncio(loop_scope="function")
    async def test_append_returns_copies_and_leaves_the_callers_messages(
        self, store: ThreadStore
    ) -> None:
        thread = plain_thread()
        await store.save(thread)
        mine = message(content="mine", sequence=42, attributes={"a": [1]})
        before = exact(mine)
        (added,) = await store.append(thread.id, mine)
        assert added is not mine
        assert exact(mine) == before
        added.attributes["a"].append(2)
        mine.attributes["a"].append(3)
        mine.content = "changed later"
        got = await self.must_get(store, thread.id)
        assert got.messages[-1].attributes == {"a": [1]}
        assert got.messages[-1].content == "mine"

    @pytest.mark.asyncio(loop_scope="function")
    async def test_append_drops_system_messages(self, store: ThreadStore) -> None:
        thread = plain_thread()
        await store.save(thread)
        added = await store.append(thread.id, message("system", "sys"), message(content="kept"))
        assert [m.content for m in added] == ["kept"]
        got = await self.must_get(store, thread.id)
        assert [m.role for m in got.messages] == ["user", "user"]
        assert added[0].sequence == 2

    @pytest.mark.asyncio(loop_scope="function")
    async def test_append_to_a_missing_thread_raises(self, store: ThreadStore) -> None:
        with pytest.raises(ThreadNotFoundError):
            await store.append("missing", message())
        with pytest.raises(KeyError):  # ThreadNotFoundError is also a KeyError
            await store.append("missing", message())
        assert await store.get("missing") is None
        assert await store.count() == 0

    @pytest.mark.asyncio(loop_scope="function")
    async def test_append_with_a_taken_message_id_writes_nothing(self, store: ThreadStore) -> None:
        thread = plain_thread(messages=2)
        await store.save(thread)
        stored = exact(await store.get(thread.id))
        with pytest.raises(ValueError):
            await store.append(thread.id, message(content="new"), message(id=thread.messages[0].id))
        assert exact(await store.get(thread.id)) == stored

    @pytest.mark.asyncio(loop_scope="function")
    async def test_save_from_before_an_append_raises(self, store: ThreadStore) -> None:
        thread = plain_thread()
        await store.save(thread)
        (added,) = await store.append(thread.id, message(content="appended"))
        thread.title = "stale"
        with pytest.raises(ConcurrencyError):
            await store.save(thread)
        got = await self.must_get(store, thread.id)
        assert got.messages[-1].id == added.id
        assert got.title == "plain"
        got.title = "fresh"
        await store.save(got)
        assert [m.id for m in (await self.must_get(store, thread.id)).messages][-1] == added.id

    @pytest.mark.asyncio(loop_scope="function")
    async def test_appended_message_round_trips(self, store: ThreadStore) -> None:
        thread = plain_thread()
        await store.save(thread)
        rich = message(
            "tool",
            [{"type": "text", "text": "résultat ✓"}],
            tool_call_id="call_9",
            attributes={"f": 1e16, "t": 0.1, "b": False},
            reactions={"👀": ["b", "a"]},
            metrics={"ms": 1.5},
        )
        (added,) = await store.append(thread.id, rich)
        got = await self.must_get(store, thread.id)
        assert exact(got.messages[-1]) == exact(added)
        expected = exact(rich)
        assert isinstance(expected, dict)
        expected["sequence"] = ("int", 2)
        assert exact(added) == expected

    # -- concurrency ------------------------------------------------------------------------------

    async def _appends(self, stores: list[ThreadStore], thread_id: str) -> list[Message]:
        async def one(number: int) -> list[Message]:
            store = stores[number % len(stores)]
            return await store.append(thread_id, message(content=f"c{number}", id=f"c{number}"))

        async with asyncio.timeout(self.deadlock_timeout):
            results = await asyncio.gather(*(one(n) for n in range(self.concurrency)))
        return [m for result in results for m in result]

    async def _check_appends(
        self, store: ThreadStore, thread: Thread, added: list[Message]
    ) -> None:
        n = self.concurrency
        got = await self.must_get(store, thread.id)
        sequences = [m.sequence or 0 for m in got.messages]
        assert len(got.messages) == n + 1, "a concurrent append was lost"
        assert sorted({m.id for m in got.messages}) == sorted(
            [thread.messages[0].id, *(f"c{i}" for i in range(n))]
        )
        assert sequences == sorted(set(sequences)), f"sequences not unique/ordered: {sequences}"
        assert sorted(m.sequence or 0 for m in added) == sequences[1:]
        assert got.version == 1 + n

    @pytest.mark.asyncio(loop_scope="function")
    async def test_concurrent_appends_lose_nothing(self, store: ThreadStore) -> None:
        thread = plain_thread()
        await store.save(thread)
        added = await self._appends([store], thread.id)
        await self._check_appends(store, thread, added)

    @requires("shared_across_instances")
    @pytest.mark.asyncio(loop_scope="function")
    async def test_concurrent_appends_across_instances_lose_nothing(
        self, store: ThreadStore, second_store: ThreadStore
    ) -> None:
        thread = plain_thread()
        await store.save(thread)
        added = await self._appends([store, second_store], thread.id)
        await self._check_appends(store, thread, added)
        await self._check_appends(second_store, thread, added)

    @pytest.mark.asyncio(loop_scope="function")
    async def test_concurrent_saves_of_distinct_threads(self, store: ThreadStore) -> None:
        threads = [plain_thread(f"p{n}", messages=3) for n in range(self.concurrency)]
        async with asyncio.timeout(self.deadlock_timeout):
            await asyncio.gather(*(store.save(t) for t in threads))
        assert await store.count() == len(threads)
        for thread in threads:
            got = await self.must_get(store, thread.id)
            assert exact(got.messages) == exact(thread.messages)
            assert got.version == 1

    async def _race(self, stores: list[ThreadStore]) -> None:
        thread = plain_thread(messages=2)
        await stores[0].save(thread)
        writers: list[Thread] = []
        for number in range(max(2, self.concurrency // 2)):
            copy = await self.must_get(stores[number % len(stores)], thread.id)
            copy.title = f"writer {number}"
            copy.messages[0].attributes["writer"] = number
            copy.add_message(message(content=f"from {number}", id=f"w{number}"))
            writers.append(copy)

        async def attempt(number: int) -> Any:
            try:
                return await stores[number % len(stores)].save(writers[number])
            except ConcurrencyError as exc:
                return exc

        async with asyncio.timeout(self.deadlock_timeout):
            results = await asyncio.gather(*(attempt(n) for n in range(len(writers))))
        winners = [n for n, r in enumerate(results) if isinstance(r, Thread)]
        assert len(winners) == 1, f"exactly one save of version 1 may win, not {winners}"
        winner = writers[winners[0]]
        assert winner.version == 2
        for store in stores:
            got = await self.must_get(store, thread.id)
            assert exact(got) == exact(winner), "the stored thread is not one writer's version"
        for number, result in enumerate(results):
            if number != winners[0]:
                assert isinstance(result, ConcurrencyError)
                assert writers[number].version == 1

    @pytest.mark.asyncio(loop_scope="function")
    async def test_racing_saves_of_one_thread_have_one_winner(self, store: ThreadStore) -> None:
        await self._race([store])

    @requires("shared_across_instances")
    @pytest.mark.asyncio(loop_scope="function")
    async def test_racing_saves_across_instances_have_one_winner(
        self, store: ThreadStore, second_store: ThreadStore
    ) -> None:
        await self._race([store, second_store])

    @pytest.mark.asyncio(loop_scope="function")
    async def test_racing_append_and_save_lose_nothing(self, store: ThreadStore) -> None:
        for _ in range(5):
            thread = plain_thread()
            await store.save(thread)
            loaded = await self.must_get(store, thread.id)
            loaded.add_message(message(content="saved", id="saved"))

            async def save(loaded: Thread = loaded) -> Thread | ConcurrencyError:
                try:
                    return await store.save(loaded)
                except ConcurrencyError as exc:
                    return exc

            async with asyncio.timeout(self.deadlock_timeout):
                saved, _ = await asyncio.gather(
                    save(), store.append(thread.id, message(content="appended", id="appended"))
                )
            got = await self.must_get(store, thread.id)
            ids = [m.id for m in got.messages]
            assert "appended" in ids, "an append was lost"
            assert ("saved" in ids) == isinstance(saved, Thread)
            assert got.version == (3 if isinstance(saved, Thread) else 2)
            assert len({m.sequence for m in got.messages}) == len(ids)

    @pytest.mark.asyncio(loop_scope="function")
    async def test_racing_delete_and_save_leave_nothing_behind(self, store: ThreadStore) -> None:
        for number in range(5):
            thread = plain_thread(f"r{number}", messages=3)
            await store.save(thread)
            loaded = await self.must_get(store, thread.id)
            loaded.messages[0].content = "edited"
            loaded.add_message(message(content="added"))

            async def save(loaded: Thread = loaded) -> Thread | ConcurrencyError:
                try:
                    return await store.save(loaded)
                except ConcurrencyError as exc:
                    return exc

            async with asyncio.timeout(self.deadlock_timeout):
                _, deleted = await asyncio.gather(save(), store.delete(thread.id))
            # Either order ends with no thread: a save after the delete is stale.
            assert deleted is True
            assert await store.get(thread.id) is None
            await store.save(plain_thread(thread.id, messages=0))
            assert (await self.must_get(store, thread.id)).messages == [], "orphaned messages"

    # -- two instances ----------------------------------------------------------------------------

    @requires("shared_across_instances")
    @pytest.mark.asyncio(loop_scope="function")
    async def test_second_instance_sees_writes_and_versions(
        self, store: ThreadStore, second_store: ThreadStore
    ) -> None:
        thread = plain_thread(attributes={"x": 1}, source={"name": "s"})
        await store.save(thread)
        theirs = await self.must_get(second_store, thread.id)
        assert exact(theirs) == exact(await store.get(thread.id))
        assert self.ids(await second_store.find_by_attributes({"x": 1})) == [thread.id]
        theirs.title = "from the second instance"
        await second_store.save(theirs)
        thread.title = "stale"
        with pytest.raises(ConcurrencyError):
            await store.save(thread)
        assert (await self.must_get(store, thread.id)).title == "from the second instance"
        assert await second_store.delete(thread.id)
        assert await store.get(thread.id) is None
        assert await store.count() == 0
