"""Moving threads between stores: copy, export to JSON Lines, import from JSON Lines.

Every path keeps ``version`` and ``updated_at`` (saves use ``preserve=True``), so a copy is
indistinguishable from its original and can be verified by a checksum.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from pydantic import ValidationError

from tyler_core.models import Thread, utc_now
from tyler_core.store import ThreadStore

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "CopyReport",
    "ImportFileError",
    "Progress",
    "checksum",
    "copy_threads",
    "export_threads",
    "import_threads",
    "iterate_threads",
]

EXPORT_FORMAT = "tyler-threadstore"
EXPORT_VERSION = 1


@dataclass(slots=True)
class Progress:
    """Counts of a running transfer; ``total`` is the number of threads expected, if known."""

    total: int | None = None
    threads: int = 0
    messages: int = 0
    skipped: int = 0
    #: Threads left alone because the target holds a newer version than the source.
    newer: int = 0
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        """One line for a terminal: counts, rates and ETA."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        done = self.threads + self.skipped + self.newer
        rate = done / elapsed
        text = f"{done}"
        if self.total:
            text += f"/{self.total} threads ({100 * done / self.total:.0f}%)"
        else:
            text += " threads"
        text += f", {rate:.0f} threads/s, {self.messages / elapsed:.0f} messages/s"
        if self.total and rate > 0:
            text += f", ETA {max(self.total - done, 0) / rate:.0f} s"
        if self.skipped:
            text += f", {self.skipped} already there"
        if self.newer:
            text += f", {self.newer} newer in the target kept"
        return text


@dataclass(frozen=True, slots=True)
class CopyReport:
    """What a copy did and whether both sides agree afterwards."""

    copied: int
    skipped: int
    messages: int
    source_count: int
    target_count: int
    source_checksum: str
    target_checksum: str
    #: Threads not copied because the target holds a newer version (see ``overwrite``).
    kept_newer: int = 0

    @property
    def verified(self) -> bool:
        """Both stores hold the same number of threads with the same content."""
        return (
            self.source_count == self.target_count and self.source_checksum == self.target_checksum
        )


class ImportFileError(ValueError):
    """A line of an import file is not a thread; the lines before it were imported."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line


def _check_batch(batch: int) -> int:
    """``batch`` if it is a usable page size: a page of none never ends a transfer."""
    if not isinstance(batch, int) or isinstance(batch, bool):
        raise TypeError(f"batch must be an int, not {type(batch).__name__}")
    if batch < 1:
        raise ValueError(f"batch must be at least 1, not {batch}")
    return batch


async def iterate_threads(store: ThreadStore, *, batch: int = 100) -> AsyncIterator[Thread]:
    """Every thread of ``store``, in list order, ``batch`` at a time."""
    _check_batch(batch)
    offset = 0
    while True:
        page = await store.list(limit=batch, offset=offset)
        for thread in page:
            yield thread
        if len(page) < batch:
            return
        offset += batch


def _canonical(thread: Thread) -> bytes:
    return thread.model_dump_json().encode()


async def checksum(store: ThreadStore, *, batch: int = 100) -> tuple[int, str]:
    """The number of threads and a digest of their content, independent of order."""
    _check_batch(batch)
    digests = []
    async for thread in iterate_threads(store, batch=batch):
        digests.append(hashlib.sha256(_canonical(thread)).hexdigest())
    combined = hashlib.sha256("".join(sorted(digests)).encode()).hexdigest()
    return len(digests), combined


async def copy_threads(
    source: ThreadStore,
    target: ThreadStore,
    *,
    batch: int = 100,
    overwrite: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
) -> CopyReport:
    """Copy every thread of ``source`` into ``target``, keeping versions and timestamps.

    Resumable: a thread already in ``target`` at the same version is skipped, so running a copy
    again after an interruption duplicates nothing. A thread the target holds at a higher
    version was changed there after the copy it came from: it is kept and counted in
    ``kept_newer``, never replaced by older data. ``overwrite`` rewrites both kinds.
    Ends by comparing counts and checksums of both stores.

    Raises:
        ValueError: ``batch`` is below 1.
    """
    _check_batch(batch)
    progress = Progress(total=await source.count())
    async for thread in iterate_threads(source, batch=batch):
        if not overwrite and await _already_there(target, thread, progress):
            if on_progress:
                on_progress(progress)
            continue
        await target.save(thread, preserve=True)
        progress.threads += 1
        progress.messages += len(thread.messages)
        if on_progress:
            on_progress(progress)
    source_count, source_sum = await checksum(source, batch=batch)
    target_count, target_sum = await checksum(target, batch=batch)
    return CopyReport(
        progress.threads,
        progress.skipped,
        progress.messages,
        source_count,
        target_count,
        source_sum,
        target_sum,
        progress.newer,
    )


async def _already_there(target: ThreadStore, thread: Thread, progress: Progress) -> bool:
    """Whether ``target`` holds ``thread`` at its version or a newer one (counted in
    ``progress``)."""
    existing = await target.get(thread.id)
    if existing is None or existing.version < thread.version:
        return False
    if existing.version == thread.version:
        progress.skipped += 1
    else:
        progress.newer += 1
    return True


async def export_threads(store: ThreadStore, out: IO[str], *, batch: int = 100) -> int:
    """Write a header line and then one thread per line (JSON Lines); return the thread count."""
    _check_batch(batch)
    header = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "exported_at": str(utc_now())}
    out.write(json.dumps(header) + "\n")
    count = 0
    async for thread in iterate_threads(store, batch=batch):
        out.write(thread.model_dump_json() + "\n")
        count += 1
    return count


def _header(line: str) -> dict[str, Any]:
    try:
        header = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ImportFileError(1, f"not a tyler-threadstore export header: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
        raise ImportFileError(1, "not a tyler-threadstore export (no header line)")
    if header.get("version") != EXPORT_VERSION:
        raise ImportFileError(
            1, f"export format version {header.get('version')!r} is not supported"
        )
    return header


async def import_threads(
    store: ThreadStore,
    lines: Iterable[str],
    *,
    on_progress: Callable[[Progress], None] | None = None,
) -> int:
    """Save every thread of an export, keeping versions and timestamps; return how many.

    Raises:
        ImportFileError: a line is not a thread (its number says which); the lines before it
            were imported.
    """
    progress = Progress()
    seen_header = False
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if not seen_header:
            _header(line)
            seen_header = True
            continue
        try:
            thread = Thread.model_validate_json(line)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ImportFileError(
                number, f"{where}: {first['msg']}" if where else first["msg"]
            ) from None
        await store.save(thread, preserve=True)
        progress.threads += 1
        progress.messages += len(thread.messages)
        if on_progress:
            on_progress(progress)
    if not seen_header:
        raise ImportFileError(1, "the file is empty")
    return progress.threads
