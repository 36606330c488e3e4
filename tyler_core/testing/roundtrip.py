"""Rules 2 and 5: what is saved comes back exactly, stores never alias the caller's objects, and
system messages are never stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tyler_core.models import Message, Thread
from tyler_core.store import ThreadStore
from tyler_core.testing.base import ConformanceBase, exact, stored_form
from tyler_core.testing.samples import (
    json_fields_of,
    message,
    numbers_thread,
    plain_thread,
    rich_thread,
)

__all__ = ["RoundTripTests"]


class RoundTripTests(ConformanceBase):
    """Fidelity, copies and system messages."""

    @pytest.mark.asyncio(loop_scope="function")
    async def test_get_missing_thread_returns_none(self, store: ThreadStore) -> None:
        assert await store.get("no-such-thread") is None

    @pytest.mark.asyncio(loop_scope="function")
    async def test_rich_thread_round_trips_field_for_field(self, store: ThreadStore) -> None:
        thread = rich_thread()
        await store.save(thread)
        got = await self.must_get(store, thread.id)
        assert exact(got) == stored_form(thread)

    @pytest.mark.asyncio(loop_scope="function")
    async def test_round_trip_survives_a_second_save_and_a_fresh_read(
        self, store: ThreadStore
    ) -> None:
        thread = rich_thread()
        await store.save(thread)
        loaded = await self.must_get(store, thread.id)
        loaded.title = "second"
        await store.save(loaded)
        again = await self.must_get(store, thread.id)
        assert exact(again) == stored_form(loaded)
        assert exact(again.messages) == exact(loaded.messages)

    @pytest.mark.asyncio(loop_scope="function")
    async def test_json_types_stay_distinct(self, store: ThreadStore) -> None:
        values = {"i": 1, "f": 1.0, "b": True, "s": "1", "n": None, "big": 1e16, "tenth": 0.1}
        thread = plain_thread(attributes=values)
        thread.messages[0].attributes = {"nested": dict(values), "list": list(values.values())}
        await store.save(thread)
        got = await self.must_get(store, thread.id)
        for key, value in values.items():
            stored = got.attributes[key]
            assert type(stored) is type(value), f"{key}: {stored!r} is not a {type(value)}"
            assert stored == value
        assert exact(got.messages[0].attributes) == exact(thread.messages[0].attributes)
        assert exact(got.attributes) == exact(values)

    @pytest.mark.asyncio(loop_scope="function")
    async def test_numbers_keep_their_type_in_every_json_field(self, store: ThreadStore) -> None:
        # JSONB turns 1.0 into 1 and some decoders do the same; attributes alone are not enough
        # to catch it, since backends often store each JSON field its own way.
        thread = numbers_thread()
        await store.save(thread)
        expected = exact(json_fields_of(thread))
        self.assert_same_json_fields(await self.must_get(store, thread.id), expected, "get")
        (listed,) = await store.list_recent()
        self.assert_same_json_fields(listed, expected, "list_recent")
        changed = await self.must_get(store, thread.id)
        changed.messages[0].attributes["later"] = 5.0
        changed.messages[1].metrics["later"] = -0.0
        changed.source = {**(changed.source or {}), "later": 7.0}
        await store.save(changed)
        expected = exact(json_fields_of(changed))
        again = await self.must_get(store, thread.id)
        self.assert_same_json_fields(again, expected, "get after a second save")

    @staticmethod
    def assert_same_json_fields(got: Thread, expected: dict[str, object], how: str) -> None:
        """Fail naming the first JSON field of ``got`` that differs from ``expected``."""
        fields = exact(json_fields_of(got))
        for name, value in expected.items():
            assert fields[name] == value, f"{how}: {name} changed type or value"

    @pytest.mark.asyncio(loop_scope="function")
    async def test_datetimes_keep_microseconds_and_come_back_in_utc(
        self, store: ThreadStore
    ) -> None:
        thread = plain_thread()
        instant = datetime(2023, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
        thread.created_at = instant
        thread.messages[0].timestamp = datetime(2001, 2, 3, 4, 5, 6, 7, tzinfo=UTC)
        await store.save(thread)
        got = await self.must_get(store, thread.id)
        assert got.created_at == instant
        assert got.created_at.utcoffset() == timedelta(0)
        assert got.messages[0].timestamp == datetime(2001, 2, 3, 4, 5, 6, 7, tzinfo=UTC)
        assert got.messages[0].timestamp.utcoffset() == timedelta(0)
        assert got.updated_at == thread.updated_at
        assert got.updated_at.utcoffset() == timedelta(0)

    @pytest.mark.asyncio(loop_scope="function")
    async def test_the_first_and_last_instants_python_has_come_back_exactly(
        self, store: ThreadStore
    ) -> None:
        # Drivers may map these to special values (asyncpg: PostgreSQL's +/-infinity).
        first, last = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
        thread = plain_thread(messages=2)
        thread.created_at = first
        thread.messages[0].timestamp = last
        thread.messages[1].timestamp = first
        await store.save(thread, touch=False)
        for got in (await self.must_get(store, thread.id), *(await store.list(limit=10))):
            assert exact(got) == stored_form(thread)
            assert [got.created_at, *(m.timestamp for m in got.messages)] == [first, last, first]

    @pytest.mark.asyncio(loop_scope="function")
    async def test_non_utc_and_naive_datetimes_are_stored_as_utc(self, store: ThreadStore) -> None:
        thread = plain_thread(messages=2)
        # Assigned after construction, so only the store can normalise them.
        plus_two = timezone(timedelta(hours=2))
        thread.created_at = datetime(2024, 6, 1, 2, 30, 0, 123456, tzinfo=plus_two)
        thread.messages[0].timestamp = datetime(2024, 6, 1, 0, 0, 0, 1)  # naive: taken as UTC
        thread.messages[1].timestamp = datetime(2024, 5, 31, 19, 0, 0, 2, tzinfo=timezone.min)
        await store.save(thread)
        got = await self.must_get(store, thread.id)
        assert got.created_at == datetime(2024, 6, 1, 0, 30, 0, 123456, tzinfo=UTC)
        assert got.messages[0].timestamp == datetime(2024, 6, 1, 0, 0, 0, 1, tzinfo=UTC)
        assert got.messages[1].timestamp == datetime(2024, 6, 1, 18, 59, 0, 2, tzinfo=UTC)
        for value in (got.created_at, got.messages[0].timestamp, got.messages[1].timestamp):
            assert value.utcoffset() == timedelta(0)

    @pytest.mark.asyncio(loop_scope="function")
    async def test_unicode_round_trips(self, store: ThreadStore) -> None:
        texts = [
            "emoji 😀👨‍👩‍👧‍👦🏳️‍🌈",
            "rtl שלום עולם مرحبا بالعالم",
            "combining e\u0301 vs \u00e9",
            "zero width \u200b\u200d and bom \ufeff",
            "cjk 你好世界 日本語",
            "astral \U0001d518\U0001d52b \U0001f600 \U0010fffd",
            "quotes ' \" ` \\ and % _ * ? [ ] { } $",
        ]
        thread = Thread(title=texts[0] + texts[1], attributes={t: t for t in texts})
        for text in texts:
            thread.add_message(message(content=text, name=text[:10]))
        await store.save(thread)
        got = await self.must_get(store, thread.id)
        assert got.title == thread.title
        assert [m.content for m in got.messages] == texts
        assert got.attributes == {t: t for t in texts}

    @pytest.mark.asyncio(loop_scope="function")
    async def test_ten_megabytes_of_content_round_trip(self, store: ThreadStore) -> None:
        content = "0123456789abcdef" * (10 * 1024 * 1024 // 16) + "✓ end"
        thread = plain_thread()
        thread.add_message(message(content=content))
        await store.save(thread)
        got = await self.must_get(store, thread.id)
        assert len(got.messages) == 2
        assert got.messages[1].content == content

    @pytest.mark.asyncio(loop_scope="function")
    async def test_reactions_keep_their_user_order(self, store: ThreadStore) -> None:
        thread = plain_thread()
        mid = thread.messages[0].id
        for user in ("zed", "amy", "mia", "bob"):
            thread.add_reaction(mid, "👍", user)
        thread.add_reaction(mid, "🎉", "amy")
        await store.save(thread)
        got = await self.must_get(store, thread.id)
        assert got.get_reactions(mid) == {"👍": ["zed", "amy", "mia", "bob"], "🎉": ["amy"]}
        got.remove_reaction(mid, "🎉", "amy")
        got.remove_reaction(mid, "👍", "amy")
        await store.save(got)
        again = await self.must_get(store, thread.id)
        assert again.get_reactions(mid) == {"👍": ["zed", "mia", "bob"]}

    @pytest.mark.asyncio(loop_scope="function")
    async def test_save_returns_the_callers_object(self, store: ThreadStore) -> None:
        thread = plain_thread()
        assert await store.save(thread) is thread

    # -- copies ---------------------------------------------------------------------------------

    @pytest.mark.asyncio(loop_scope="function")
    async def test_mutating_the_saved_object_does_not_change_storage(
        self, store: ThreadStore
    ) -> None:
        thread = rich_thread()
        await store.save(thread)
        expected = stored_form(thread)
        thread.title = "changed"
        thread.attributes["nested"]["a"]["b"] = "changed"
        thread.messages[1].reactions["👍"].append("mallory")
        thread.messages[1].attributes["scores"].append(42)
        thread.messages[1].attachments[0].attributes["pages"] = 0
        thread.messages.pop()
        got = await self.must_get(store, thread.id)
        assert exact(got) == expected

    @pytest.mark.asyncio(loop_scope="function")
    async def test_mutating_a_returned_object_does_not_change_storage(
        self, store: ThreadStore
    ) -> None:
        thread = rich_thread()
        await store.save(thread)
        first = await self.must_get(store, thread.id)
        expected = exact(first)
        first.attributes["nested"]["a"] = None
        first.messages[0].reactions["👍"].clear()
        first.messages[0].attachments.clear()
        first.messages.clear()
        (listed,) = await store.list_recent()
        listed.attributes.clear()
        listed.messages[0].content = "changed"
        second = await self.must_get(store, thread.id)
        assert second is not first
        assert exact(second) == expected

    @pytest.mark.asyncio(loop_scope="function")
    async def test_each_read_returns_new_objects(self, store: ThreadStore) -> None:
        thread = plain_thread()
        await store.save(thread)
        one, two = await store.get(thread.id), await store.get(thread.id)
        assert one is not None and two is not None
        assert one is not two and one is not thread
        assert one.messages[0] is not two.messages[0]
        assert one.attributes is not two.attributes

    # -- system messages --------------------------------------------------------------------------

    @pytest.mark.asyncio(loop_scope="function")
    async def test_system_messages_are_not_stored_but_stay_on_the_callers_object(
        self, store: ThreadStore
    ) -> None:
        thread = Thread()
        thread.add_message(message("system", "be brief", id="s"))
        thread.add_message(message("user", "one", id="u"))
        thread.add_message(message("assistant", "two", id="a"))
        before = exact(thread.messages)
        await store.save(thread)
        assert [m.id for m in thread.messages] == ["s", "u", "a"]
        assert exact([m for m in thread.messages if m.role == "system"]) == before[:1]
        got = await self.must_get(store, thread.id)
        assert [m.id for m in got.messages] == ["u", "a"]
        assert all(m.role != "system" for m in got.messages)
        (listed,) = await store.list_recent()
        assert [m.id for m in listed.messages] == ["u", "a"]

    @pytest.mark.asyncio(loop_scope="function")
    async def test_thread_of_only_system_messages_stores_no_messages(
        self, store: ThreadStore
    ) -> None:
        thread = Thread()
        thread.add_message(message("system", "x"))
        await store.save(thread)
        got = await self.must_get(store, thread.id)
        assert got.messages == []
        assert len(thread.messages) == 1

    @pytest.mark.asyncio(loop_scope="function")
    async def test_system_message_added_to_a_loaded_thread_is_not_stored(
        self, store: ThreadStore
    ) -> None:
        thread = plain_thread(messages=2)
        await store.save(thread)
        loaded = await self.must_get(store, thread.id)
        loaded.add_message(Message(role="system", content="late system prompt"))
        await store.save(loaded)
        got = await self.must_get(store, thread.id)
        assert [m.role for m in got.messages] == ["user", "user"]
        assert exact(got.messages) == exact(thread.messages)
