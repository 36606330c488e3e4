"""Rules 1, 10 and 11: opening and closing, the optional capabilities (``search``, ``ttl``), and
errors. A capability the backend does not declare must raise ``NotSupportedError``."""

from __future__ import annotations

import asyncio
import sys
import time
from urllib.parse import urlsplit

import pytest

from tyler_core.errors import (
    NotSupportedError,
    StoreConnectionError,
    ThreadNotFoundError,
    TylerStoreError,
)
from tyler_core.settings import MAX_TTL
from tyler_core.store import ThreadStore
from tyler_core.testing.base import ConformanceBase, StoreOpener, exact, options_of, requires
from tyler_core.testing.samples import message, plain_thread

__all__ = ["CapabilityTests"]


class CapabilityTests(ConformanceBase):
    """Lifecycle, search, ttl and error behaviour."""

    # -- opening, closing, errors -----------------------------------------------------------------

    @pytest.mark.asyncio(loop_scope="function")
    async def test_store_works_as_an_async_context_manager(self, store: ThreadStore) -> None:
        thread = plain_thread()
        async with ThreadStore(store.database_url, **options_of(store)) as lazy:
            await lazy.save(thread)  # connects on first use
            assert (await self.must_get(lazy, thread.id)).version == 1
            await lazy.backend.purge()
            assert await lazy.count() == 0
        await lazy.close()  # closing twice is harmless
        with pytest.raises(StoreConnectionError):
            await lazy.get(thread.id)

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.parametrize("bad", ["", "x" * 33, "Upper", "with-dash", "dot.ted", "ü", "a b"])
    async def test_bad_namespace_is_refused_at_construction(
        self, store: ThreadStore, bad: str
    ) -> None:
        options = options_of(store) | {"namespace": bad}
        with pytest.raises(ValueError):
            ThreadStore(store.database_url, **options)

    @pytest.mark.asyncio(loop_scope="function")
    async def test_bad_ids_raise_value_error(self, store: ThreadStore) -> None:
        for bad in ("", "x" * 256, "nul\x00"):
            with pytest.raises(ValueError):
                await store.get(bad)
            with pytest.raises(ValueError):
                await store.delete(bad)
            with pytest.raises(ValueError):
                await store.append(bad, message())
        assert await store.count() == 0

    @pytest.mark.asyncio(loop_scope="function")
    async def test_repr_hides_the_password(self, store: ThreadStore) -> None:
        url = store.database_url
        password = urlsplit(url).password if url else None
        assert "ThreadStore(" in repr(store)
        if password:
            assert password not in repr(store)

    @pytest.mark.asyncio(loop_scope="function")
    async def test_errors_share_one_root(self, store: ThreadStore) -> None:
        with pytest.raises(TylerStoreError):
            await store.append("missing", message())
        thread = plain_thread()
        await store.save(thread)
        thread.version = 5
        with pytest.raises(TylerStoreError):
            await store.save(thread)
        assert (await self.must_get(store, thread.id)).version == 1

    # -- search -----------------------------------------------------------------------------------

    async def _search_corpus(self, store: ThreadStore) -> None:
        corpus = {
            "both": ["The QUICK brown foxes", "unrelated words here"],
            "split": ["quick zebra", "brown piano"],
            "only-quick": ["quick quick quick"],
            "later": ["another message", "Brown, quick; yes!"],
            "in-system": [],
            "parts": [],
        }
        for tid, texts in corpus.items():
            thread = plain_thread(tid, messages=0)
            for text in texts:
                thread.add_message(message(content=text))
            if tid == "in-system":
                thread.add_message(message("system", "quick brown"))
                thread.add_message(message(content="nothing to see"))
            if tid == "parts":
                thread.add_message(message(content=[{"type": "text", "text": "brown quick"}]))
            await store.save(thread)

    @requires("search")
    @pytest.mark.asyncio(loop_scope="function")
    async def test_search_needs_every_word_in_one_message(self, store: ThreadStore) -> None:
        await self._search_corpus(store)
        threads, total = await store.search_threads("quick brown")
        assert sorted(self.ids(threads)) == ["both", "later", "parts"]
        assert total == 3
        listed = [t for t in self.ids(await store.list_recent()) if t in ("both", "later", "parts")]
        assert self.ids(threads) == listed, "search results must be ordered as list()"
        assert {t.id for t in (await store.search_threads("QUICK"))[0]} == {
            "both",
            "split",
            "only-quick",
            "later",
            "parts",
        }
        assert await store.search_threads("zebra piano") == ([], 0)
        assert await store.search_threads("nonexistentword") == ([], 0)

    @requires("search")
    @pytest.mark.asyncio(loop_scope="function")
    async def test_search_pages_and_totals(self, store: ThreadStore) -> None:
        await self._search_corpus(store)
        everything, total = await store.search_threads("quick", limit=100)
        first, first_total = await store.search_threads("quick", limit=2)
        rest, rest_total = await store.search_threads("quick", limit=100, offset=2)
        assert total == first_total == rest_total == 5
        assert self.ids(first) + self.ids(rest) == self.ids(everything)
        assert await store.search_threads("quick", limit=0) == ([], 5)
        found, _ = await store.search_threads("brown", limit=1)
        assert [m.role for m in found[0].messages if m.role == "system"] == []
        huge, huge_total = await store.search_threads("quick", limit=2**70)
        assert (self.ids(huge), huge_total) == (self.ids(everything), 5)
        assert await store.search_threads("quick", limit=10, offset=2**70) == ([], 5)

    @pytest.mark.asyncio(loop_scope="function")
    async def test_search_without_the_capability_raises(self, store: ThreadStore) -> None:
        if store.capabilities.search:
            pytest.skip("backend declares search")
        with pytest.raises(NotSupportedError):
            await store.search_threads("quick brown")

    # -- ttl --------------------------------------------------------------------------------------

    async def _wait_until_gone(self, store: ThreadStore, thread_id: str) -> float:
        """Poll until ``thread_id`` is absent; return how long it took."""
        start = time.monotonic()
        while await store.get(thread_id) is not None:
            assert time.monotonic() - start < self.ttl_wait, f"{thread_id} did not expire"
            await asyncio.sleep(0.1)
        return time.monotonic() - start

    async def _assert_absent_everywhere(self, store: ThreadStore, thread_id: str) -> None:
        assert await store.get(thread_id) is None
        assert thread_id not in self.ids(await store.list_recent())
        assert thread_id not in self.ids(await store.find_by_attributes({"ttl": True}))
        assert thread_id not in self.ids(await store.find_by_source("ttl"))
        with pytest.raises(ThreadNotFoundError):
            await store.append(thread_id, message())
        again = plain_thread(thread_id, messages=0)
        await store.save(again)  # an expired thread counts as never stored
        assert (await self.must_get(store, thread_id)).messages == []
        assert await store.delete(thread_id)

    @requires("ttl")
    @pytest.mark.asyncio(loop_scope="function")
    async def test_ttl_per_save_expires_the_whole_thread(
        self, store: ThreadStore, opener: StoreOpener
    ) -> None:
        real = await opener(clock=None)  # expiry runs on real time
        short = plain_thread("short", attributes={"ttl": True}, source={"name": "ttl"}, messages=3)
        keep = plain_thread("keep", attributes={"ttl": True}, source={"name": "ttl"})
        await real.save(short, ttl=self.ttl_seconds)
        await real.save(keep)
        assert (await self.must_get(real, "short")).version == 1
        await self._wait_until_gone(real, "short")
        assert await real.count() == 1
        await self._assert_absent_everywhere(real, "short")
        assert (await self.must_get(real, "keep")).version == 1

    @requires("ttl")
    @pytest.mark.asyncio(loop_scope="function")
    async def test_ttl_per_store(self, store: ThreadStore, opener: StoreOpener) -> None:
        real = await opener(clock=None)
        with_ttl = await opener.reopen(real, ttl=self.ttl_seconds)
        thread = plain_thread("expiring", attributes={"ttl": True}, source={"name": "ttl"})
        await with_ttl.save(thread)
        assert await with_ttl.get("expiring") is not None
        await self._wait_until_gone(with_ttl, "expiring")
        assert await with_ttl.count() == 0
        await self._assert_absent_everywhere(with_ttl, "expiring")

    @requires("ttl")
    @pytest.mark.asyncio(loop_scope="function")
    async def test_append_restarts_the_ttl(self, store: ThreadStore, opener: StoreOpener) -> None:
        real = await opener(clock=None)
        ttl = 2 * self.ttl_seconds
        await real.save(plain_thread("t"), ttl=ttl)
        await asyncio.sleep(0.6 * ttl)
        await real.append("t", message(content="keeps it alive"))
        await asyncio.sleep(0.6 * ttl)  # past the first expiry, before the second
        got = await real.get("t")
        assert got is not None, "append must restart the thread's ttl"
        assert len(got.messages) == 2
        await self._wait_until_gone(real, "t")

    @requires("ttl")
    @pytest.mark.asyncio(loop_scope="function")
    async def test_invalid_ttl_is_refused(self, store: ThreadStore) -> None:
        for bad in (0, -1, float("nan"), float("inf"), MAX_TTL + 1, sys.maxsize):
            with pytest.raises(ValueError):
                await store.save(plain_thread(), ttl=bad)
        assert await store.count() == 0
        (stored,) = await self.saved(store, plain_thread("kept", attributes={"a": 1}))
        stored.attributes["a"] = 2
        with pytest.raises(ValueError):
            await store.save(stored, ttl=sys.maxsize)
        assert (await store.find_by_attributes({"a": 1}))[0].version == 1
        await store.save(stored, ttl=MAX_TTL)  # the longest allowed
        assert self.ids(await store.find_by_attributes({"a": 2})) == ["kept"]

    @pytest.mark.asyncio(loop_scope="function")
    async def test_ttl_without_the_capability_raises(self, store: ThreadStore) -> None:
        if store.capabilities.ttl:
            pytest.skip("backend declares ttl")
        thread = plain_thread()
        with pytest.raises(NotSupportedError):
            await store.save(thread, ttl=5)
        assert await store.get(thread.id) is None
        assert thread.version == 0
        with pytest.raises(NotSupportedError):
            ThreadStore(store.database_url, **(options_of(store) | {"ttl": 5}))

    @pytest.mark.asyncio(loop_scope="function")
    async def test_threads_without_ttl_do_not_expire(self, store: ThreadStore) -> None:
        thread = plain_thread(messages=2)
        await store.save(thread)
        await asyncio.sleep(0.2)
        assert exact((await self.must_get(store, thread.id)).messages) == exact(thread.messages)
