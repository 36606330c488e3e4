"""Two namespaces on one server never see each other's threads, under any query."""

from __future__ import annotations

import pytest

from tests.reliability.conftest import OpenStore
from tyler_core.errors import ConcurrencyError, ThreadNotFoundError
from tyler_core.models import Message, Thread


def _thread(thread_id: str, owner: str) -> Thread:
    # Same ids, attributes, sources and words in both namespaces: only the namespace differs.
    thread = Thread(
        id=thread_id,
        title=f"{owner} {thread_id}",
        attributes={"shared": "same", "owner": owner},
        source={"name": "slack", "channel": "C1"},
    )
    thread.add_message(Message(role="user", content=f"common words {owner}word"))
    return thread


async def test_two_namespaces_never_see_each_other(open_store: OpenStore) -> None:
    alpha = await open_store()
    beta = await open_store()
    assert alpha.options.namespace != beta.options.namespace
    for thread_id in ("both-1", "both-2"):
        await alpha.save(_thread(thread_id, "alpha"))
        await beta.save(_thread(thread_id, "beta"))
    await alpha.save(_thread("alpha-only", "alpha"))

    for store, owner, ids in (
        (alpha, "alpha", ["both-1", "both-2", "alpha-only"]),
        (beta, "beta", ["both-1", "both-2"]),
    ):
        other = "beta" if owner == "alpha" else "alpha"
        assert sorted(t.id for t in await store.list()) == sorted(ids)
        assert sorted(t.id for t in await store.list_recent()) == sorted(ids)
        threads, total = await store.list_threads()
        assert total == len(ids) == await store.count()
        assert {t.attributes["owner"] for t in threads} == {owner}
        assert len(await store.find_by_attributes({"shared": "same"})) == len(ids)
        assert await store.find_by_attributes({"owner": other}) == []
        found = await store.find_by_source("slack", {"channel": "C1"})
        assert {t.attributes["owner"] for t in found} == {owner}
        for thread_id in ids:
            got = await store.get(thread_id)
            assert got is not None
            assert got.attributes["owner"] == owner
        if store.capabilities.search:
            hits, count = await store.search_threads("common")
            assert count == len(ids)
            assert {t.attributes["owner"] for t in hits} == {owner}
            assert await store.search_threads(f"{other}word") == ([], 0)
    assert await beta.get("alpha-only") is None

    # Writes address their own namespace only.
    with pytest.raises(ThreadNotFoundError):
        await beta.append("alpha-only", Message(role="user", content="x"))
    await beta.append("both-1", Message(role="user", content="beta's append"))
    assert await beta.delete("alpha-only") is False
    assert await beta.delete("both-2") is True
    stale = await alpha.get("both-1")
    assert stale is not None
    assert stale.version == 1  # beta's append did not bump alpha's thread
    stale.title = "alpha edit"
    await alpha.save(stale)
    with pytest.raises(ConcurrencyError):
        await beta.save(_thread("both-1", "beta"))  # taken in beta, not because of alpha
    alpha_both1 = await alpha.get("both-1")
    beta_both1 = await beta.get("both-1")
    assert alpha_both1 is not None
    assert beta_both1 is not None
    assert [m.content for m in alpha_both1.messages] == ["common words alphaword"]
    assert [m.content for m in beta_both1.messages][-1] == "beta's append"
    assert beta_both1.title == "beta both-1"
    assert await alpha.get("both-2") is not None
    assert sorted(t.id for t in await alpha.list()) == ["alpha-only", "both-1", "both-2"]
    assert [t.id for t in await beta.list()] == ["both-1"]

    # Purging one namespace leaves the other whole.
    await beta.backend.purge()
    assert await beta.count() == 0
    assert await alpha.count() == 3
