"""What the Redis test files share: the stores a test opens, purged and closed after it, and a
connection that records the commands it sends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

from redis.asyncio import Connection

from tyler_core.store import ThreadStore

__all__ = ["CountingConnection", "opened_stores"]


class CountingConnection(Connection):
    """A redis-py connection that records the name of every command it sends (clear ``sent``
    before the part a test counts)."""

    sent: ClassVar[list[str]] = []

    def pack_command(self, *args: Any) -> list[bytes]:
        name = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
        CountingConnection.sent.append(name.split()[0].upper())
        return super().pack_command(*args)


async def opened_stores() -> AsyncIterator[list[ThreadStore]]:
    """A fixture's body: the list a test appends the stores it opens to; each is purged and
    closed afterwards."""
    opened: list[ThreadStore] = []
    yield opened
    for store in reversed(opened):
        try:
            await store.backend.purge()
        finally:
            await store.close()
