"""The facade's snapshot cache: what each thread looked like when the store last returned or saved
it, so that a save hands the backend only what changed since."""

from __future__ import annotations

import weakref

from tyler_core.changes import Snapshot
from tyler_core.models import Thread

__all__ = ["SnapshotCache"]


class SnapshotCache:
    """Snapshots keyed by thread object identity; an entry goes when its thread is collected."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref[Thread], Snapshot]] = {}

    def get(self, thread: Thread) -> Snapshot | None:
        entry = self._entries.get(id(thread))
        if entry is None or entry[0]() is not thread:
            return None
        return entry[1]

    def put(self, thread: Thread, snapshot: Snapshot) -> None:
        key = id(thread)
        entries = self._entries

        def forget(_: weakref.ref[Thread], key: int = key) -> None:
            entries.pop(key, None)

        entries[key] = (weakref.ref(thread, forget), snapshot)

    def clear(self) -> None:
        self._entries.clear()
