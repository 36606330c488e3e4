"""A thread deleted and created again under the same id is another thread: an object loaded
from the first one must not save into the second (DESIGN.md rule 2: "this includes a thread
deleted since it was loaded"). Found by the concurrency soak."""

from __future__ import annotations

import pytest

from tests.reliability.conftest import OpenStore
from tyler_core.errors import ConcurrencyError
from tyler_core.models import Message, Thread


@pytest.mark.xfail(
    strict=True,
    reason="known bug on every backend: the version check compares numbers only, and a thread "
    "created again after a delete restarts at version 1, so a stale object of the deleted one "
    "passes it (fix: an incarnation token checked with the version; see docs/reliability.md)",
)
async def test_a_stale_object_of_a_deleted_thread_does_not_save_into_its_successor(
    open_store: OpenStore,
) -> None:
    store = await open_store()
    first = Thread(id="reused", title="first incarnation")
    first.add_message(Message(id="old", role="user", content="old"))
    await store.save(first)
    stale = await store.get("reused")
    assert stale is not None
    assert await store.delete("reused") is True
    second = Thread(id="reused", title="second incarnation")
    second.add_message(Message(id="new", role="user", content="new"))
    await store.save(second)
    assert stale.version == second.version == 1  # the same number, another thread

    stale.title = "stale edit"
    stale.add_message(Message(id="stale", role="user", content="stale"))
    with pytest.raises(ConcurrencyError):
        await store.save(stale)
    stored = await store.get("reused")
    assert stored is not None
    assert stored.title == "second incarnation"
    assert [m.id for m in stored.messages] == ["new"]
