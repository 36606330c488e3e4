"""Rules 2 and 4: versions and timestamps on save, stale saves, and the change set (every change
made through the model is written, none is lost)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tyler_core.errors import ConcurrencyError
from tyler_core.models import Attachment, Message, Thread
from tyler_core.store import ThreadStore
from tyler_core.testing.base import ConformanceBase, exact, stored_form
from tyler_core.testing.clock import ManualClock
from tyler_core.testing.samples import message, plain_thread, rich_thread

__all__ = ["VersionTests"]


class VersionTests(ConformanceBase):
    """Optimistic concurrency on save, ``touch``/``preserve``, and partial writes."""

    @pytest.mark.asyncio(loop_scope="function")
    async def test_versions_start_at_one_and_count_saves(self, store: ThreadStore) -> None:
        thread = plain_thread()
        assert thread.version == 0
        await store.save(thread)
        assert thread.version == 1
        assert (await self.must_get(store, thread.id)).version == 1
        await store.save(thread)
        await store.save(thread)
        assert thread.version == 3
        assert (await self.must_get(store, thread.id)).version == 3

    @pytest.mark.asyncio(loop_scope="function")
    async def test_save_stamps_updated_at_from_the_clock(
        self, store: ThreadStore, clock: ManualClock
    ) -> None:
        thread = plain_thread()
        expected = clock.now
        await store.save(thread)
        assert thread.updated_at == expected
        got = await self.must_get(store, thread.id)
        assert got.updated_at == expected

    @pytest.mark.asyncio(loop_scope="function")
    async def test_stale_save_raises_and_writes_nothing(self, store: ThreadStore) -> None:
        thread = plain_thread(messages=2)
        await store.save(thread)
        first, second = await store.get(thread.id), await store.get(thread.id)
        assert first is not None and second is not None
        first.title = "first wins"
        await store.save(first)
        stored = exact(await store.get(thread.id))
        second.title = "second loses"
        second.add_message(message(content="lost"))
        second.messages[0].attributes["x"] = 1
        caller_before = exact(second)
        with pytest.raises(ConcurrencyError):
            await store.save(second)
        assert exact(await store.get(thread.id)) == stored
        assert exact(second) == caller_before, "a failed save must leave the caller's object"

    @pytest.mark.asyncio(loop_scope="function")
    async def test_save_of_a_deleted_thread_raises(self, store: ThreadStore) -> None:
        thread = plain_thread()
        await store.save(thread)
        loaded = await self.must_get(store, thread.id)
        assert await store.delete(thread.id)
        loaded.title = "resurrected"
        with pytest.raises(ConcurrencyError):
            await store.save(loaded)
        assert await store.get(thread.id) is None
        assert loaded.version == 1

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.parametrize("through", ["delta", "full"])
    async def test_a_stale_object_does_not_save_into_a_thread_recreated_under_its_id(
        self, store: ThreadStore, through: str
    ) -> None:
        # Rule 2: "this includes a thread deleted since it was loaded", even when a new thread
        # has since been stored under the same id and has reached the stale object's version.
        first = plain_thread("reused", title="first incarnation")
        await store.save(first)
        stale = await self.must_get(store, "reused")
        if through == "full":
            stale = stale.model_copy(deep=True)  # the store has no snapshot of this object
        assert await store.delete("reused")
        second = plain_thread("reused", title="second incarnation", messages=1)
        await store.save(second)
        stored = exact(await store.get("reused"))
        assert stale.version == second.version == 1

        stale.title = "stale edit"
        stale.add_message(Message(id="stale-message", role="user", content="stale"))
        with pytest.raises(ConcurrencyError):
            await store.save(stale)
        assert exact(await store.get("reused")) == stored
        assert stale.version == 1

        # The live object of the second incarnation still saves, and so does a fresh load.
        second.title = "second, edited"
        await store.save(second)
        fresh = await self.must_get(store, "reused")
        fresh.title = "second, edited again"
        await store.save(fresh)
        assert (await self.must_get(store, "reused")).title == "second, edited again"

    @pytest.mark.asyncio(loop_scope="function")
    async def test_incarnation_survives_updates_and_appends(self, store: ThreadStore) -> None:
        thread = plain_thread(messages=1)
        await store.save(thread)
        token = thread.incarnation
        assert token is not None
        assert (await self.must_get(store, thread.id)).incarnation == token
        thread.title = "edited"
        await store.save(thread)
        await store.append(thread.id, Message(role="user", content="appended"))
        assert (await self.must_get(store, thread.id)).incarnation == token
        listed = [t for t in await store.list() if t.id == thread.id]
        assert [t.incarnation for t in listed] == [token]
        assert await store.delete(thread.id)
        again = plain_thread(thread.id)
        await store.save(again)
        assert again.incarnation not in (None, token)
        assert (await self.must_get(store, thread.id)).incarnation == again.incarnation

    @pytest.mark.asyncio(loop_scope="function")
    async def test_new_thread_with_a_taken_id_raises(self, store: ThreadStore) -> None:
        original = plain_thread("taken", title="original")
        await store.save(original)
        stored = exact(await store.get("taken"))
        intruder = plain_thread("taken", title="intruder", messages=3)
        with pytest.raises(ConcurrencyError):
            await store.save(intruder)
        assert intruder.version == 0
        assert exact(await store.get("taken")) == stored

    @pytest.mark.asyncio(loop_scope="function")
    async def test_touch_false_keeps_updated_at(self, store: ThreadStore) -> None:
        thread = plain_thread()
        given = datetime(2020, 5, 17, 8, 9, 10, 111213, tzinfo=UTC)
        thread.updated_at = given
        await store.save(thread, touch=False)
        assert thread.updated_at == given
        assert thread.version == 1
        got = await self.must_get(store, thread.id)
        assert got.updated_at == given
        assert got.version == 1

    @pytest.mark.asyncio(loop_scope="function")
    async def test_preserve_writes_version_and_updated_at_as_given(
        self, store: ThreadStore
    ) -> None:
        thread = plain_thread()
        await store.save(thread)
        copy = thread.model_copy(deep=True)
        copy.version = 42
        copy.updated_at = datetime(2019, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
        copy.title = "imported"
        await store.save(copy, preserve=True)
        assert copy.version == 42
        got = await self.must_get(store, thread.id)
        assert (got.version, got.updated_at, got.title) == (42, copy.updated_at, "imported")
        await store.save(got)
        assert (await self.must_get(store, thread.id)).version == 43
        with pytest.raises(ConcurrencyError):
            await store.save(thread)  # still at version 1

    @pytest.mark.asyncio(loop_scope="function")
    async def test_preserve_into_an_empty_store_keeps_everything(self, store: ThreadStore) -> None:
        thread = rich_thread_with_version(7)
        await store.save(thread, preserve=True)
        got = await self.must_get(store, thread.id)
        assert exact(got) == stored_form(thread)

    @pytest.mark.asyncio(loop_scope="function")
    async def test_invalid_edit_is_refused_and_nothing_is_written(self, store: ThreadStore) -> None:
        thread = plain_thread()
        await store.save(thread)
        stored = exact(await store.get(thread.id))
        bad_values: list[object] = [float("nan"), float("inf"), "nul\x00", 2**64, {"d": set()}]
        for bad in bad_values:
            loaded = await self.must_get(store, thread.id)
            loaded.attributes["bad"] = bad  # in place: the model does not see it
            before = exact(loaded)
            with pytest.raises(ValueError):  # pydantic's ValidationError is a ValueError
                await store.save(loaded)
            assert exact(loaded) == before
            assert exact(await store.get(thread.id)) == stored, f"{bad!r} reached storage"
        deep: dict[str, object] = {}
        cursor = deep
        for _ in range(40):
            cursor["d"] = {}
            cursor = cursor["d"]  # type: ignore[assignment]
        loaded = await self.must_get(store, thread.id)
        loaded.messages[0].attributes["deep"] = deep
        with pytest.raises(ValueError):
            await store.save(loaded)
        assert exact(await store.get(thread.id)) == stored

    # -- the change set ---------------------------------------------------------------------------

    @pytest.mark.asyncio(loop_scope="function")
    async def test_in_place_nested_edits_persist(self, store: ThreadStore) -> None:
        thread = plain_thread(attributes={"k": {"x": 0}}, messages=2)
        thread.messages[0].attributes = {"k": {"x": 0}}
        await store.save(thread)
        thread.messages[0].attributes["k"]["x"] = 1
        thread.attributes["k"]["x"] = 2
        await store.save(thread)
        got = await self.must_get(store, thread.id)
        assert got.messages[0].attributes == {"k": {"x": 1}}
        assert got.attributes == {"k": {"x": 2}}
        got.messages[1].attributes["k"] = {"y": [1]}
        got.messages[1].attributes["k"]["y"].append(2.5)
        got.source = {"name": "email", "to": ["a@example.com"]}
        await store.save(got)
        again = await self.must_get(store, thread.id)
        assert exact(again.messages[1].attributes) == exact({"k": {"y": [1, 2.5]}})
        assert again.source == {"name": "email", "to": ["a@example.com"]}

    @pytest.mark.asyncio(loop_scope="function")
    async def test_every_kind_of_change_is_written(self, store: ThreadStore) -> None:
        thread = plain_thread(messages=4)
        await store.save(thread)
        loaded = await self.must_get(store, thread.id)
        removed = loaded.messages.pop(1)
        loaded.messages[0].content = "edited"
        loaded.messages[0].attachments.append(Attachment(filename="a.txt"))
        loaded.add_reaction(loaded.messages[1].id, "🔥", "u1")
        loaded.add_message(message(content="added"))
        loaded.title = "retitled"
        loaded.attributes["new"] = [1, 2]
        await store.save(loaded)
        got = await self.must_get(store, thread.id)
        assert exact(got) == stored_form(loaded)
        assert removed.id not in [m.id for m in got.messages]

    @pytest.mark.asyncio(loop_scope="function")
    async def test_changed_sequences_reorder_the_messages(self, store: ThreadStore) -> None:
        thread = plain_thread(messages=3)
        await store.save(thread)
        loaded = await self.must_get(store, thread.id)
        first, second, third = loaded.messages
        first.sequence, third.sequence = 30, 10
        second.sequence = 9  # numeric order: 9 before 10 before 30
        await store.save(loaded)
        got = await self.must_get(store, thread.id)
        assert [m.id for m in got.messages] == [second.id, third.id, first.id]
        assert [m.sequence for m in got.messages] == [9, 10, 30]

    @pytest.mark.asyncio(loop_scope="function")
    async def test_clearing_messages_deletes_them(self, store: ThreadStore) -> None:
        thread = plain_thread(messages=3)
        await store.save(thread)
        thread.clear_messages()
        await store.save(thread)
        assert (await self.must_get(store, thread.id)).messages == []
        thread.add_message(message(content="after clear"))
        await store.save(thread)
        got = await self.must_get(store, thread.id)
        assert [m.content for m in got.messages] == ["after clear"]

    @pytest.mark.asyncio(loop_scope="function")
    async def test_a_copy_without_history_is_written_whole(self, store: ThreadStore) -> None:
        thread = plain_thread(messages=3)
        await store.save(thread)
        loaded = await self.must_get(store, thread.id)
        copy = loaded.model_copy(deep=True)  # a new object: the store has no snapshot of it
        del copy.messages[0]
        copy.messages[0].content = "changed in the copy"
        await store.save(copy)
        got = await self.must_get(store, thread.id)
        assert exact(got) == stored_form(copy)

    @pytest.mark.asyncio(loop_scope="function")
    async def test_threads_read_by_list_and_find_can_be_saved(self, store: ThreadStore) -> None:
        thread = plain_thread(attributes={"team": "a"}, source={"name": "web"}, messages=2)
        await store.save(thread)
        (listed,) = await store.list(limit=10)
        listed.messages[0].attributes["via"] = "list"
        await store.save(listed)
        (found,) = await store.find_by_attributes({"team": "a"})
        found.messages[1].attributes["via"] = "find"
        await store.save(found)
        (by_source,) = await store.find_by_source("web")
        by_source.title = "via source"
        await store.save(by_source)
        got = await self.must_get(store, thread.id)
        assert [m.attributes.get("via") for m in got.messages] == ["list", "find"]
        assert (got.title, got.version) == ("via source", 4)

    @pytest.mark.asyncio(loop_scope="function")
    async def test_appending_one_message_to_a_long_thread_keeps_the_others(
        self, store: ThreadStore
    ) -> None:
        thread = plain_thread(messages=200)
        await store.save(thread)
        thread.add_message(message(content="one more"))
        await store.save(thread)
        got = await self.must_get(store, thread.id)
        assert len(got.messages) == 201
        assert exact(got) == stored_form(thread)

    @pytest.mark.asyncio(loop_scope="function")
    async def test_type_only_edits_and_deleted_keys_persist(self, store: ThreadStore) -> None:
        # Python says 1 == 1.0 == True; JSON does not, and neither may the change set.
        thread = plain_thread(attributes={"n": 1, "gone": None}, messages=2)
        thread.messages[0].attributes = {"deep": {"list": [1, True, "1", 2.5]}, "gone": 0}
        await store.save(thread)
        loaded = await self.must_get(store, thread.id)
        loaded.attributes["n"] = 1.0
        del loaded.attributes["gone"]
        values = loaded.messages[0].attributes["deep"]["list"]
        values[:] = [True, 1, 1, 2.5]
        del loaded.messages[0].attributes["gone"]
        await store.save(loaded)
        got = await self.must_get(store, thread.id)
        assert exact(got) == stored_form(loaded)
        assert exact(got.messages[0].attributes) == exact({"deep": {"list": [True, 1, 1, 2.5]}})

    @pytest.mark.asyncio(loop_scope="function")
    async def test_in_place_edits_of_reactions_and_attachments_persist(
        self, store: ThreadStore
    ) -> None:
        thread = plain_thread(messages=2)
        first, second = thread.messages
        second.attachments.append(Attachment(filename="a.txt", attributes={"pages": 1}))
        thread.add_reaction(first.id, "👍", "amy")
        await store.save(thread)
        first.reactions["👍"].insert(0, "bob")  # in place, not through add_reaction
        second.attachments[0].attributes["pages"] = 2
        second.attachments[0].status = "stored"
        await store.save(thread)
        got = await self.must_get(store, thread.id)
        assert exact(got) == stored_form(thread)
        assert got.get_reactions(first.id) == {"👍": ["bob", "amy"]}
        got.messages[1].attachments[0].attributes["pages"] = 3  # after a read, too
        await store.save(got)
        again = await self.must_get(store, thread.id)
        assert again.messages[1].attachments[0].attributes == {"pages": 3}


def rich_thread_with_version(version: int) -> Thread:
    """A rich thread as an import would bring it: a version and an old ``updated_at``."""
    thread = rich_thread()
    thread.version = version
    thread.updated_at = datetime(2022, 2, 2, 2, 2, 2, 222222, tzinfo=UTC)
    return thread
