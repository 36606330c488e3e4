"""Rules 5 to 8, 12 and 13: reading, deleting, ordering, pages, lookups and namespaces."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tyler_core.store import ThreadStore
from tyler_core.testing.base import ConformanceBase, exact
from tyler_core.testing.clock import ManualClock
from tyler_core.testing.samples import message, plain_thread

__all__ = ["QueryTests"]

# Ids whose order by code point differs from every case-insensitive, locale-aware or numeric
# collation: "B" < "a" < "b" < "z" < "é" < "ж" < "😀", and "10" < "9".
TIE_IDS = ["a", "B", "b", "z", "é", "ж", "10", "9", "😀", "a b", "a-b", "A"]
BY_CODE_POINT_DESC = sorted(TIE_IDS, reverse=True)

# Keys that break lookups built from strings: JSON paths, quoting, operators, SQL.
HOSTILE_KEYS = {
    "dot": "with.dot",
    "quote": "quo'te",
    "double_quote": 'dou"ble',
    "dollar": "$dollar",
    "bracket": "a]b",
    "path": "$.a[0]",
    "sql": '"; DROP TABLE threads; --',
    "backslash": "back\\slash",
    "percent": "100%_*",
    "cyrillic": "ключ",
    "emoji": "🔑",
    "space": " spaced key ",
}
# Thread ids that break key schemes, globs, LIKE patterns and paths.
HOSTILE_IDS = ["a_c", "abc", "a%c", "a*c", "a?c", "{a}", "a:b", "a/b/../c", "x" * 255, "é" * 255]


class QueryTests(ConformanceBase):
    """get/delete/count, ordering, pagination, find_by_attributes, find_by_source, namespaces."""

    # -- delete, count, ids -----------------------------------------------------------------------

    @pytest.mark.asyncio(loop_scope="function")
    async def test_delete_reports_whether_it_deleted(self, store: ThreadStore) -> None:
        await self.saved(store, plain_thread("keep"), plain_thread("gone"))
        assert await store.delete("gone") is True
        assert await store.delete("gone") is False
        assert await store.delete("never-there") is False
        assert await store.get("gone") is None
        assert self.ids(await store.list_recent()) == ["keep"]
        assert await store.count() == 1

    @pytest.mark.asyncio(loop_scope="function")
    async def test_delete_removes_the_messages(self, store: ThreadStore) -> None:
        old = plain_thread("reused", messages=3)
        old.add_reaction(old.messages[0].id, "👍", "u")
        await store.save(old)
        assert await store.delete("reused")
        new = plain_thread("reused", messages=0)
        new.add_message(message(content="fresh", id="fresh"))
        await store.save(new)  # a deleted thread counts as never stored: version 0 is accepted
        got = await self.must_get(store, "reused")
        assert [m.id for m in got.messages] == ["fresh"]
        assert got.version == 1

    @pytest.mark.asyncio(loop_scope="function")
    async def test_count_and_list_threads(self, store: ThreadStore) -> None:
        assert await store.count() == 0
        assert await store.list_threads() == ([], 0)
        await self.saved(store, *(plain_thread(f"t{i}") for i in range(5)))
        assert await store.count() == 5
        threads, total = await store.list_threads(limit=2, offset=1)
        assert total == 5
        assert self.ids(threads) == self.ids(await store.list(limit=2, offset=1))
        assert len(threads) == 2

    @pytest.mark.asyncio(loop_scope="function")
    async def test_hostile_thread_ids_are_data(self, store: ThreadStore) -> None:
        await self.saved(store, *(plain_thread(tid, title=tid) for tid in HOSTILE_IDS))
        for tid in HOSTILE_IDS:
            assert (await self.must_get(store, tid)).title == tid
        assert await store.get("a.c") is None
        assert await store.get("A_C") is None
        assert await store.delete("a_c") is True  # never a pattern: "abc" and "a%c" stay
        assert sorted(self.ids(await store.list_recent())) == sorted(
            t for t in HOSTILE_IDS if t != "a_c"
        )
        assert await store.count() == len(HOSTILE_IDS) - 1

    # -- ordering and pages -----------------------------------------------------------------------

    @pytest.mark.asyncio(loop_scope="function")
    async def test_list_orders_by_updated_at_descending(
        self, store: ThreadStore, clock: ManualClock
    ) -> None:
        await self.saved(store, *(plain_thread(f"t{i}") for i in range(4)))
        assert self.ids(await store.list_recent()) == ["t3", "t2", "t1", "t0"]
        oldest = await self.must_get(store, "t0")
        await store.save(oldest)  # a save moves it to the front
        assert self.ids(await store.list(limit=100)) == ["t0", "t3", "t2", "t1"]
        newest = await self.must_get(store, "t0")
        newest.updated_at = clock.now - timedelta(days=365)
        await store.save(newest, touch=False)  # an explicit old updated_at moves it back
        assert self.ids(await store.list_recent()) == ["t3", "t2", "t1", "t0"]

    @pytest.mark.asyncio(loop_scope="function")
    async def test_ties_are_broken_by_id_descending_by_code_point(
        self, store: ThreadStore, clock: ManualClock
    ) -> None:
        clock.freeze()
        await self.saved(store, *(plain_thread(tid, attributes={"g": 1}) for tid in TIE_IDS))
        assert self.ids(await store.list_recent()) == BY_CODE_POINT_DESC
        assert self.ids(await store.list(limit=100)) == BY_CODE_POINT_DESC
        assert self.ids(await store.find_by_attributes({"g": 1})) == BY_CODE_POINT_DESC

    @pytest.mark.asyncio(loop_scope="function")
    async def test_updated_at_is_compared_to_the_microsecond(self, store: ThreadStore) -> None:
        base = datetime(2024, 1, 1, tzinfo=UTC)
        for offset, tid in ((1, "a"), (3, "b"), (2, "c")):
            thread = plain_thread(tid)
            thread.updated_at = base + timedelta(microseconds=offset)
            await store.save(thread, touch=False)
        assert self.ids(await store.list_recent()) == ["b", "c", "a"]

    @pytest.mark.asyncio(loop_scope="function")
    async def test_messages_come_back_in_sequence_order(self, store: ThreadStore) -> None:
        thread = plain_thread(messages=0)
        sequences = [5, 100, 7, 1, 10, 9, 2, 64, 3]
        for sequence in sequences:
            thread.messages.append(message(content=str(sequence), sequence=sequence))
        await store.save(thread)
        got = await self.must_get(store, thread.id)
        assert [m.sequence for m in got.messages] == sorted(sequences)
        assert [m.content for m in got.messages] == [str(s) for s in sorted(sequences)]

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.parametrize("frozen", [True, False], ids=["ties", "distinct"])
    async def test_pages_never_overlap_or_skip(
        self, store: ThreadStore, clock: ManualClock, frozen: bool
    ) -> None:
        clock.frozen = frozen
        await self.saved(store, *(plain_thread(tid) for tid in TIE_IDS))
        everything = self.ids(await store.list_recent())
        assert sorted(everything) == sorted(TIE_IDS)
        for limit in (1, 2, 5, 7):
            pages: list[str] = []
            for offset in range(0, len(TIE_IDS) + limit, limit):
                pages += self.ids(await store.list(limit=limit, offset=offset))
            assert pages == everything, f"pages of {limit}"

    @pytest.mark.asyncio(loop_scope="function")
    async def test_page_edges(self, store: ThreadStore) -> None:
        await self.saved(store, *(plain_thread(f"t{i}") for i in range(3)))
        assert await store.list(limit=0) == []
        assert await store.list(limit=10, offset=3) == []
        assert await store.list(limit=10, offset=1000) == []
        assert self.ids(await store.list(limit=10, offset=2)) == ["t0"]
        assert self.ids(await store.list_recent(None)) == ["t2", "t1", "t0"]
        assert self.ids(await store.list_recent(2)) == ["t2", "t1"]
        assert await store.list_recent(0) == []

    @pytest.mark.asyncio(loop_scope="function")
    async def test_huge_limits_and_offsets_work(self, store: ThreadStore) -> None:
        # limit=sys.maxsize is the usual "all of them"; a database refuses numbers past int64.
        await self.saved(
            store,
            *(plain_thread(f"t{i}", attributes={"a": 1}, source={"name": "s"}) for i in range(3)),
        )
        every = ["t2", "t1", "t0"]
        for limit in (2**31, sys.maxsize, 2**70):
            assert self.ids(await store.list(limit=limit)) == every, limit
            assert self.ids(await store.list(limit=limit, offset=1)) == every[1:], limit
            assert self.ids(await store.list_recent(limit)) == every, limit
            assert self.ids(await store.find_by_attributes({"a": 1}, limit=limit)) == every
            assert self.ids(await store.find_by_source("s", limit=limit)) == every
        for offset in (2**31, sys.maxsize, 2**70):
            assert await store.list(limit=10, offset=offset) == [], offset
            assert await store.list(limit=2**70, offset=offset) == [], offset
            assert await store.find_by_attributes({"a": 1}, offset=offset) == [], offset
            assert await store.find_by_source("s", offset=offset) == [], offset

    @pytest.mark.asyncio(loop_scope="function")
    async def test_negative_limits_and_offsets_raise(self, store: ThreadStore) -> None:
        await store.save(plain_thread(attributes={"a": 1}, source={"name": "s"}))
        calls: list[Any] = [
            lambda: store.list(limit=-1),
            lambda: store.list(offset=-1),
            lambda: store.list_recent(-1),
            lambda: store.list_threads(limit=-1),
            lambda: store.find_by_attributes({"a": 1}, limit=-1),
            lambda: store.find_by_attributes({"a": 1}, offset=-1),
            lambda: store.find_by_source("s", limit=-1),
            lambda: store.find_by_source("s", offset=-1),
        ]
        for call in calls:
            with pytest.raises(ValueError):
                await call()

    # -- find_by_attributes -----------------------------------------------------------------------

    @pytest.mark.asyncio(loop_scope="function")
    async def test_find_by_attributes_is_type_strict(self, store: ThreadStore) -> None:
        values: dict[str, Any] = {
            "int": 1,
            "float": 1.0,
            "true": True,
            "string": "1",
            "null": None,
            "list": [1],
            "object": {"a": 1},
            "zero": 0,
            "false": False,
            "empty": "",
            "big": 1e16,
        }
        await self.saved(store, *(plain_thread(k, attributes={"v": v}) for k, v in values.items()))
        await store.save(plain_thread("missing", attributes={"other": 1}))

        async def found(value: Any) -> list[str]:
            return sorted(self.ids(await store.find_by_attributes({"v": value})))

        assert await found(1) == ["float", "int"]
        assert await found(1.0) == ["float", "int"]
        assert await found(True) == ["true"]
        assert await found("1") == ["string"]
        assert await found(None) == ["null"]
        assert await found([1]) == ["list"]
        assert await found([1.0]) == ["list"]
        assert await found({"a": 1}) == ["object"]
        assert await found(0) == ["zero"]
        assert await found(False) == ["false"]
        assert await found("") == ["empty"]
        assert await found(10**16) == ["big"]
        assert await found(2) == []
        assert await found([]) == []

    @pytest.mark.asyncio(loop_scope="function")
    async def test_find_by_attributes_compares_objects_whole(self, store: ThreadStore) -> None:
        await store.save(plain_thread("o", attributes={"o": {"a": 1, "b": [1, {"c": None}]}}))
        await store.save(plain_thread("p", attributes={"o": {"a": 1}}))
        assert self.ids(await store.find_by_attributes({"o": {"b": [1, {"c": None}], "a": 1}})) == [
            "o"
        ]
        assert self.ids(await store.find_by_attributes({"o": {"a": 1}})) == ["p"]
        assert await store.find_by_attributes({"o": {"a": 1, "b": [{"c": None}, 1]}}) == []
        assert await store.find_by_attributes({"o": {"a": "1"}}) == []

    @pytest.mark.asyncio(loop_scope="function")
    async def test_find_by_attributes_strings_are_exact(self, store: ThreadStore) -> None:
        await store.save(plain_thread("g", attributes={"tier": "gold"}))
        for other in ("Gold", "GOLD", "gold ", " gold", "gol", "gold\n", "göld"):
            assert await store.find_by_attributes({"tier": other}) == [], other
        assert self.ids(await store.find_by_attributes({"tier": "gold"})) == ["g"]

    @pytest.mark.asyncio(loop_scope="function")
    async def test_find_by_attributes_needs_every_key(self, store: ThreadStore) -> None:
        await store.save(plain_thread("both", attributes={"a": 1, "b": 2, "c": 3}))
        await store.save(plain_thread("a-only", attributes={"a": 1, "b": 3}))
        assert self.ids(await store.find_by_attributes({"a": 1, "b": 2})) == ["both"]
        assert sorted(self.ids(await store.find_by_attributes({"a": 1}))) == ["a-only", "both"]
        assert await store.find_by_attributes({"a": 1, "d": None}) == []

    @pytest.mark.asyncio(loop_scope="function")
    async def test_find_by_attributes_null_matches_present_null_only(
        self, store: ThreadStore
    ) -> None:
        await store.save(plain_thread("null", attributes={"k": None}))
        await store.save(plain_thread("absent", attributes={"other": None}))
        await store.save(plain_thread("empty", attributes={}))
        assert self.ids(await store.find_by_attributes({"k": None})) == ["null"]

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.parametrize("key", list(HOSTILE_KEYS.values()), ids=list(HOSTILE_KEYS))
    async def test_find_by_attributes_keys_are_data(self, store: ThreadStore, key: str) -> None:
        await store.save(plain_thread("exact", attributes={key: "v"}))
        await store.save(plain_thread("longer", attributes={key + "x": "v", "x" + key: "v"}))
        await store.save(plain_thread("nested", attributes={"a": {"b": "v"}, "$": {"a": "v"}}))
        await store.save(plain_thread("other", attributes={"other": "v"}))
        assert self.ids(await store.find_by_attributes({key: "v"})) == ["exact"]
        assert await store.find_by_attributes({key: "w"}) == []
        assert await store.count() == 4  # nothing was dropped by the lookup

    @pytest.mark.asyncio(loop_scope="function")
    async def test_find_by_attributes_values_are_data(self, store: ThreadStore) -> None:
        hostile: list[Any] = [
            {"$gt": ""},
            {"$ne": None},
            "' OR '1'='1",
            "%",
            "*",
            "\\",
            {"$in": []},
        ]
        for number, value in enumerate(hostile):
            await store.save(plain_thread(f"h{number}", attributes={"q": value}))
        await store.save(plain_thread("plain", attributes={"q": "text"}))
        await store.save(plain_thread("dotted", attributes={"a.b": 1, "a": {"b": 2}}))
        for number, value in enumerate(hostile):
            assert self.ids(await store.find_by_attributes({"q": value})) == [f"h{number}"]
        assert self.ids(await store.find_by_attributes({"a.b": 1})) == ["dotted"]
        assert await store.find_by_attributes({"a.b": 2}) == []

    @pytest.mark.asyncio(loop_scope="function")
    async def test_find_by_attributes_pages_and_order(
        self, store: ThreadStore, clock: ManualClock
    ) -> None:
        for number in range(6):
            if number == 3:
                clock.freeze()
            await store.save(plain_thread(f"t{number}", attributes={"m": number % 2}))
        await store.save(plain_thread("other", attributes={"m": "0"}))
        listed = [t for t in self.ids(await store.list_recent()) if t != "other"]
        evens = [t for t in listed if int(t[1]) % 2 == 0]
        assert self.ids(await store.find_by_attributes({"m": 0})) == evens
        assert self.ids(await store.find_by_attributes({"m": 0}, limit=2)) == evens[:2]
        assert self.ids(await store.find_by_attributes({"m": 0}, limit=2, offset=2)) == evens[2:]
        assert await store.find_by_attributes({"m": 0}, limit=0) == []
        assert await store.find_by_attributes({"m": 0}, offset=9) == []

    @pytest.mark.asyncio(loop_scope="function")
    async def test_find_by_attributes_needs_attributes(self, store: ThreadStore) -> None:
        with pytest.raises(ValueError):
            await store.find_by_attributes({})

    # -- find_by_source ---------------------------------------------------------------------------

    @pytest.mark.asyncio(loop_scope="function")
    async def test_find_by_source(self, store: ThreadStore, clock: ManualClock) -> None:
        sources: dict[str, Any] = {
            "s1": {"name": "slack", "channel": "C1", "thread_ts": "1.0"},
            "s2": {"name": "slack", "channel": "C2", "n": 1},
            "s3": {"name": "slack", "channel": "C1", "thread_ts": 1.0},
            "d1": {"name": "discord", "channel": "C1"},
            "cap": {"name": "Slack", "channel": "C1"},
            "nameless": {"channel": "C1"},
            "none": None,
        }
        for tid, source in sources.items():
            await store.save(plain_thread(tid, source=source))
        slack = [t for t in self.ids(await store.list_recent()) if t in ("s1", "s2", "s3")]
        assert self.ids(await store.find_by_source("slack")) == slack
        assert self.ids(await store.find_by_source("slack", {})) == slack
        assert self.ids(await store.find_by_source("slack", {"channel": "C1"})) == ["s3", "s1"]
        assert self.ids(await store.find_by_source("slack", {"thread_ts": "1.0"})) == ["s1"]
        assert self.ids(await store.find_by_source("slack", {"thread_ts": 1})) == ["s3"]
        assert self.ids(await store.find_by_source("slack", {"n": 1.0})) == ["s2"]
        assert await store.find_by_source("slack", {"channel": "C3"}) == []
        assert await store.find_by_source("slack", {"missing": None}) == []
        assert self.ids(await store.find_by_source("discord", {"channel": "C1"})) == ["d1"]
        assert self.ids(await store.find_by_source("Slack")) == ["cap"]
        assert await store.find_by_source("slac") == []
        assert await store.find_by_source("") == []
        assert self.ids(await store.find_by_source("slack", limit=1, offset=1)) == slack[1:2]

    # -- namespaces -------------------------------------------------------------------------------

    @pytest.mark.asyncio(loop_scope="function")
    async def test_namespaces_isolate_every_query(
        self, store: ThreadStore, other_store: ThreadStore
    ) -> None:
        thread = plain_thread("shared-id", attributes={"a": 1}, source={"name": "s"})
        await store.save(thread)
        assert await other_store.get("shared-id") is None
        assert await other_store.list_recent() == []
        assert await other_store.list(limit=10) == []
        assert await other_store.count() == 0
        assert await other_store.list_threads() == ([], 0)
        assert await other_store.find_by_attributes({"a": 1}) == []
        assert await other_store.find_by_source("s") == []
        assert await other_store.delete("shared-id") is False
        mine = plain_thread("shared-id", title="other namespace", messages=2)
        await other_store.save(mine)  # same id, version 0: a different namespace
        assert (await self.must_get(store, "shared-id")).title == "plain"
        assert exact((await self.must_get(other_store, "shared-id")).messages) == exact(
            mine.messages
        )
        await other_store.backend.purge()
        assert await other_store.count() == 0
        assert await store.count() == 1, "purge must stay inside its namespace"
