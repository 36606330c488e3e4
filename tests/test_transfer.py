"""Copy, export and import keep every thread exactly, resume without duplicates and report bad
lines by number."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tyler_core import Message, Thread, ThreadStore
from tyler_core.transfer import (
    ImportFileError,
    checksum,
    copy_threads,
    export_threads,
    import_threads,
    iterate_threads,
)


def sample(n: int) -> list[Thread]:
    threads = []
    for i in range(n):
        thread = Thread(
            id=f"t{i:04d}",
            title=f"thread {i} 🧵",
            attributes={"i": i, "even": i % 2 == 0, "f": i / 7},
            source={"name": "slack", "channel": f"C{i % 3}"} if i % 4 else None,
        )
        for j in range(i % 5):
            thread.add_message(Message(role="user" if j % 2 else "assistant", content=f"{i}.{j}"))
        if thread.messages:
            thread.add_reaction(thread.messages[0].id, "👍", "u1")
        threads.append(thread)
    return threads


@pytest.fixture
async def source() -> AsyncIterator[ThreadStore]:
    async with ThreadStore("memory://") as store:
        for thread in sample(57):
            await store.save(thread)
        # a second save, so versions differ between threads
        for thread in (await store.list_recent())[:10]:
            thread.title = "edited"
            await store.save(thread)
        yield store


async def dumps(store: ThreadStore) -> dict[str, str]:
    return {t.id: t.model_dump_json() for t in await store.list_recent()}


async def test_copy_keeps_everything_and_verifies(source: ThreadStore) -> None:
    async with ThreadStore("memory://") as target:
        seen: list[int] = []
        report = await copy_threads(
            source, target, batch=10, on_progress=lambda p: seen.append(p.threads)
        )
        assert report.verified
        assert (report.copied, report.skipped, report.source_count) == (57, 0, 57)
        assert seen[-1] == 57
        assert await dumps(target) == await dumps(source)


async def test_copy_resumes_without_duplicating(source: ThreadStore) -> None:
    async with ThreadStore("memory://") as target:
        for thread in (await source.list_recent())[:20]:  # an interrupted first run
            await target.save(thread, preserve=True)
        report = await copy_threads(source, target, batch=7)
        assert (report.copied, report.skipped) == (37, 20)
        assert report.verified
        assert await dumps(target) == await dumps(source)
        again = await copy_threads(source, target)
        assert (again.copied, again.skipped) == (0, 57)
        forced = await copy_threads(source, target, overwrite=True)
        assert forced.copied == 57 and forced.verified


async def test_copy_reports_a_target_that_differs(source: ThreadStore) -> None:
    async with ThreadStore("memory://") as target:
        await target.save(Thread(id="extra"))
        report = await copy_threads(source, target)
        assert not report.verified
        assert report.target_count == 58


async def test_checksum_sees_any_difference(source: ThreadStore) -> None:
    async with ThreadStore("memory://") as target:
        await copy_threads(source, target)
        before = await checksum(target)
        thread = (await target.list_recent(1))[0]
        thread.attributes["i"] = float(thread.attributes["i"])  # equal in Python, not in JSON
        await target.save(thread, preserve=True)
        assert (await checksum(target))[1] != before[1]


async def test_export_import_round_trip(source: ThreadStore) -> None:
    out = io.StringIO()
    assert await export_threads(source, out) == 57
    lines = out.getvalue().splitlines()
    header = json.loads(lines[0])
    assert header["format"] == "tyler-threadstore" and header["version"] == 1
    async with ThreadStore("memory://") as target:
        assert await import_threads(target, lines) == 57
        assert await dumps(target) == await dumps(source)


async def test_a_bad_line_stops_the_import_with_its_number(source: ThreadStore) -> None:
    out = io.StringIO()
    await export_threads(source, out)
    lines = out.getvalue().splitlines()
    lines[5] = lines[5][:40]  # a truncated line
    async with ThreadStore("memory://") as target:
        with pytest.raises(ImportFileError, match=r"^line 6: ") as caught:
            await import_threads(target, lines)
        assert caught.value.line == 6
        assert await target.count() == 4  # the lines before it were imported


async def test_a_line_breaking_a_model_limit_is_reported(source: ThreadStore) -> None:
    out = io.StringIO()
    await export_threads(source, out)
    lines = out.getvalue().splitlines()
    bad = json.loads(lines[2])
    bad["id"] = ""
    lines[2] = json.dumps(bad)
    async with ThreadStore("memory://") as target:
        with pytest.raises(ImportFileError, match=r"^line 3: id"):
            await import_threads(target, lines)
        assert await target.count() == 1


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        ([], "empty"),
        (['{"id": "x"}'], "no header"),
        (['{"format": "tyler-threadstore", "version": 99}'], "version 99"),
        (["not json"], "header"),
    ],
)
async def test_files_that_are_not_exports_are_refused(lines: list[str], reason: str) -> None:
    async with ThreadStore("memory://") as target:
        with pytest.raises(ImportFileError, match=reason):
            await import_threads(target, lines)


@pytest.mark.parametrize("batch", [0, -1])
async def test_a_batch_below_one_is_refused_by_every_transfer(
    source: ThreadStore, batch: int
) -> None:
    async with ThreadStore("memory://") as target:
        with pytest.raises(ValueError, match=r"^batch must be at least 1"):
            await copy_threads(source, target, batch=batch)
        with pytest.raises(ValueError, match=r"^batch must be at least 1"):
            await checksum(source, batch=batch)
        with pytest.raises(ValueError, match=r"^batch must be at least 1"):
            await export_threads(source, io.StringIO(), batch=batch)
        with pytest.raises(ValueError, match=r"^batch must be at least 1"):
            [t async for t in iterate_threads(source, batch=batch)]
        assert await target.count() == 0


@pytest.fixture(params=["memory", "sqlite"])
def target_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite+aiosqlite:///{tmp_path}/t.db"


async def test_copy_keeps_a_thread_the_target_holds_at_a_newer_version(
    source: ThreadStore, target_url: str
) -> None:
    async with await ThreadStore.create(target_url) as target:
        await copy_threads(source, target)
        edited = await target.get("t0003")
        assert edited is not None
        edited.title = "changed in the target"
        await target.save(edited)

        again = await copy_threads(source, target)
        assert (again.copied, again.skipped, again.kept_newer) == (0, 56, 1)
        assert not again.verified
        kept = await target.get("t0003")
        assert kept is not None and kept.title == "changed in the target"

        forced = await copy_threads(source, target, overwrite=True)
        assert (forced.copied, forced.kept_newer) == (57, 0) and forced.verified
        replaced = await target.get("t0003")
        assert replaced is not None and replaced.title != "changed in the target"
