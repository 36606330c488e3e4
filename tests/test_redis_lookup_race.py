"""Redis lookups against a save that lands between the reader's set read and its header read:
a thread that matches before and after is found, and a thread whose looked-up value changed is
answered from one of its states, never a mix."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from tests.redis_support import opened_stores
from tests.services import service_url
from tyler_core.models import Thread
from tyler_core.store import ThreadStore
from tyler_core.testing.base import fresh_namespace
from tyler_redis.backend import RedisBackend


@pytest.fixture
async def opened() -> AsyncIterator[list[ThreadStore]]:
    async for stores in opened_stores():
        yield stores


@pytest.fixture(params=["redis", "redis_cluster"])
async def pair(
    request: pytest.FixtureRequest, opened: list[ThreadStore]
) -> tuple[ThreadStore, ThreadStore]:
    """A writer and a reader on one fresh namespace of each server."""
    url, namespace = service_url(request.param), fresh_namespace()
    for _ in range(2):
        opened.append(await ThreadStore.create(url, namespace=namespace))
    return opened[0], opened[1]


def _save_before_headers(
    monkeypatch: pytest.MonkeyPatch, reader: ThreadStore, save: Callable[[], Any]
) -> None:
    """Make the reader's next lookup run ``save`` after its set read, before its header read."""
    backend = reader.backend
    assert isinstance(backend, RedisBackend)
    original = backend._headers

    async def headers_after_a_save(thread_ids: Sequence[str]) -> list[dict[bytes, bytes]]:
        monkeypatch.setattr(backend, "_headers", original)
        await save()
        return await original(thread_ids)

    monkeypatch.setattr(backend, "_headers", headers_after_a_save)


def _edit_title(thread: Thread) -> None:
    thread.title = "renamed"


def _edit_other_attribute(thread: Thread) -> None:
    thread.attributes["counter"] = 1


def _edit_other_source_property(thread: Thread) -> None:
    assert thread.source is not None
    thread.source["channel"] = "general"


@pytest.mark.parametrize("edit", [_edit_title, _edit_other_attribute, _edit_other_source_property])
@pytest.mark.parametrize("lookup", ["attributes", "source"])
async def test_thread_saved_in_the_lookup_window_with_its_values_kept_is_found(
    pair: tuple[ThreadStore, ThreadStore],
    monkeypatch: pytest.MonkeyPatch,
    edit: Callable[[Thread], None],
    lookup: str,
) -> None:
    writer, reader = pair
    thread = Thread(id="always", attributes={"team": "red"}, source={"name": "slack"})
    await writer.save(thread)

    async def save() -> None:
        edit(thread)
        await writer.save(thread)

    _save_before_headers(monkeypatch, reader, save)
    if lookup == "attributes":
        found = await reader.find_by_attributes({"team": "red"})
    else:
        found = await reader.find_by_source("slack")
    assert [t.id for t in found] == ["always"]
    assert found[0].version == thread.version  # the state after the save


async def test_thread_whose_looked_up_value_changes_in_the_window_is_one_of_its_states(
    pair: tuple[ThreadStore, ThreadStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, reader = pair
    thread = Thread(id="moving", attributes={"team": "red"})
    await writer.save(thread)
    await writer.save(Thread(id="staying", attributes={"team": "red"}))

    async def save() -> None:
        thread.attributes["team"] = "blue"
        await writer.save(thread)

    _save_before_headers(monkeypatch, reader, save)
    found = await reader.find_by_attributes({"team": "red"})
    assert "staying" in [t.id for t in found]
    assert all(t.attributes["team"] == "red" for t in found)


async def test_stale_member_left_by_a_save_is_not_counted_twice(
    pair: tuple[ThreadStore, ThreadStore],
) -> None:
    writer, reader = pair
    thread = Thread(id="twice", attributes={"team": "red", "counter": 0})
    await writer.save(thread)
    thread.attributes["counter"] = 1
    await writer.save(thread)  # its first lookup member stays until the next index script
    found = await reader.find_by_attributes({"team": "red"})
    assert [(t.id, t.attributes["counter"]) for t in found] == [("twice", 1)]
