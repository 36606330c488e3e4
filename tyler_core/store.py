"""ThreadStore: the facade users hold. It owns every rule that is the same for all backends.

System messages are never stored; versions and ``updated_at`` are stamped here; a save hands the
backend only what changed since this store last returned or saved the thread; arguments are
checked once; driver errors are wrapped; URLs are masked wherever they are shown.

The snapshot cache is in :mod:`tyler_core.snapshots`, the argument checks in
:mod:`tyler_core.arguments` and the error wrapping in :mod:`tyler_core.error_wrapping`.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import unquote, urlsplit

from tyler_core.arguments import check_filter, check_page, check_thread_id
from tyler_core.backend import Capabilities, StorageBackend
from tyler_core.changes import compute_changes, snapshot_of
from tyler_core.error_wrapping import ErrorWrapper
from tyler_core.errors import NotSupportedError, StoreConnectionError, ThreadNotFoundError
from tyler_core.jsonvalues import check_text
from tyler_core.models import Message, Thread, set_incarnation, to_utc, utc_now
from tyler_core.registry import normalize_url, resolve_backend
from tyler_core.settings import MAX_TTL, StoreOptions, resolve_options, strip_facade_parameters
from tyler_core.snapshots import SnapshotCache
from tyler_core.telemetry import Operation
from tyler_core.urls import mask_url, mask_urls_in, scheme_of

__all__ = ["Clock", "ThreadStore"]

logger = logging.getLogger("tyler_core")

Clock = Callable[[], datetime]
T = TypeVar("T")
_WORD = re.compile(r"\w+")


class ThreadStore:
    """Conversation storage behind one URL.

    ``ThreadStore(url)`` connects on first use; ``await ThreadStore.create(url)`` connects now
    and fails fast. Both work as ``async with`` blocks. With no URL the store is in memory.

    Args:
        url: the store URL (``postgresql+asyncpg://...``, ``redis://...``, ``memory://``, a
            SQLite file name ending in ``.db``...). Options may also come in its query string.
        clock: returns the current time for ``updated_at`` (tests inject one).
        **options: ``namespace``, ``ttl``, ``connect_timeout``, pool settings, ``transactions``
            (see :class:`~tyler_core.settings.StoreOptions`); other keywords go to the backend.

    Raises:
        BackendNotFoundError: unknown scheme or malformed URL.
        MissingDependencyError: the backend's driver is not installed.
        ValueError: a bad option (a namespace outside ``[a-z0-9_]{1,32}``, say).
        TypeError: an unknown keyword, for a backend that passes none to a driver, or one that
            looks like a misspelt option (``namepsace``) for any backend.
    """

    def __init__(self, url: str | None = None, *, clock: Clock | None = None, **options: Any):
        if url is not None and not isinstance(url, str):
            raise TypeError(f"a store URL is a str, not {type(url).__name__}")
        self._url = url
        normalized = normalize_url(url)
        backend_url, query = strip_facade_parameters(normalized)
        self._options: StoreOptions = resolve_options(options, query)
        backend_class = resolve_backend(normalized)
        self._password = self._password_of(normalized)
        # What logs and spans call the backend: the scheme carries no credentials.
        self._scheme = scheme_of(normalized)
        self._backend: StorageBackend = backend_class.from_url(backend_url, self._options)
        if self._options.ttl is not None and not self._backend.capabilities.ttl:
            raise NotSupportedError(f"{backend_class.__name__} does not support ttl")
        self._clock: Clock = clock or utc_now
        self._snapshots = SnapshotCache()
        self._open_lock = asyncio.Lock()
        self._opened = False
        self._closed = False

    @classmethod
    async def create(
        cls, url: str | None = None, *, clock: Clock | None = None, **options: Any
    ) -> Self:
        """Open a store now: connect, create or check the schema, or fail within
        ``connect_timeout`` with :class:`~tyler_core.errors.StoreConnectionError`."""
        store = cls(url, clock=clock, **options)
        await store.initialize()
        return store

    # -- lifecycle -----------------------------------------------------------------------------

    async def initialize(self) -> None:
        """Connect and prepare the schema (done lazily by every operation otherwise)."""
        if self._closed:
            raise StoreConnectionError(f"{self!r} is closed")
        if self._opened:
            return
        async with self._open_lock:
            if self._opened:
                return
            timeout = self._options.connect_timeout
            with self._wrapped("open", connecting=True):
                try:
                    async with asyncio.timeout(timeout):
                        await self._backend.open()
                except TimeoutError:
                    await self._close_quietly()
                    raise StoreConnectionError(
                        f"could not open {self._masked} within {timeout:g} s"
                    ) from None
                except BaseException:
                    await self._close_quietly()
                    raise
            self._opened = True
            logger.debug("opened %s", self._masked)

    async def _close_quietly(self) -> None:
        try:
            await self._backend.close()
        except Exception:
            logger.debug("closing %s after a failed open also failed", self._masked)

    async def close(self) -> None:
        """Release the backend's pools and connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._snapshots.clear()
        with self._wrapped("close"):
            await self._backend.close()

    async def __aenter__(self) -> Self:
        await self.initialize()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- properties ----------------------------------------------------------------------------

    @property
    def database_url(self) -> str | None:
        """The URL as given (``None`` when none was given). It may hold a password: use
        ``repr(store)`` or :func:`~tyler_core.urls.mask_url` to show it."""
        return self._url

    @property
    def engine(self) -> Any:
        """SQLAlchemy's ``AsyncEngine`` for SQL stores, else ``None``."""
        return self._backend.engine

    @property
    def backend(self) -> StorageBackend:
        """The backend instance behind this store."""
        return self._backend

    @property
    def capabilities(self) -> Capabilities:
        """The optional features the backend declares."""
        return self._backend.capabilities

    @property
    def options(self) -> StoreOptions:
        """The resolved options."""
        return self._options

    @property
    def _masked(self) -> str:
        return mask_url(self._url) or "memory://"

    def __repr__(self) -> str:
        return f"ThreadStore({self._masked!r}, namespace={self._options.namespace!r})"

    # -- error handling ------------------------------------------------------------------------

    @staticmethod
    def _password_of(url: str) -> str | None:
        try:
            password = urlsplit(url).password
        except ValueError:
            return None
        return unquote(password) if password else None

    def _scrub(self, text: str) -> str:
        text = mask_urls_in(text)
        if self._password:
            text = text.replace(self._password, "***")
        return text

    def _wrapped(self, operation: str, *, connecting: bool = False) -> ErrorWrapper:
        return ErrorWrapper(self, operation, connecting)

    async def _call(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        await self.initialize()
        with self._wrapped(operation):
            return await call()

    def _operation(self, name: str, thread_id: str | None = None) -> Operation:
        """The log line and span of one public operation (see :mod:`tyler_core.telemetry`)."""
        return Operation(self._scheme, name, thread_id)

    def _read_many(self, op: Operation, threads: builtins.list[Thread]) -> builtins.list[Thread]:
        op.threads = len(threads)
        op.messages = sum(len(t.messages) for t in threads)
        return self._remember(threads)

    # -- writes --------------------------------------------------------------------------------

    async def save(
        self,
        thread: Thread,
        *,
        touch: bool = True,
        preserve: bool = False,
        ttl: float | None = None,
    ) -> Thread:
        """Store ``thread`` and its non-system messages; return the same object.

        The save succeeds only if the stored version equals ``thread.version`` (0 for a thread
        not stored); then both become ``version + 1`` and ``updated_at`` becomes now.

        Args:
            thread: the thread; its system messages stay on it but are never stored.
            touch: ``False`` keeps ``updated_at`` as given.
            preserve: write ``version`` and ``updated_at`` exactly as given, without the
                version check (copies and imports only).
            ttl: seconds until the thread expires (``ttl`` capability); default: the store's.

        Raises:
            ConcurrencyError: the stored version differs; nothing was written.
            pydantic.ValidationError, ValueError: the thread breaks a model limit.

        On any error the caller's object is left as it was.
        """
        if not isinstance(thread, Thread):
            raise TypeError(f"save() takes a Thread, not {type(thread).__name__}")
        with self._operation("save", thread.id) as op:
            return await self._save(thread, op, touch=touch, preserve=preserve, ttl=ttl)

    async def _save(
        self, thread: Thread, op: Operation, *, touch: bool, preserve: bool, ttl: float | None
    ) -> Thread:
        ttl = self._check_ttl(ttl)
        await self.initialize()
        if preserve:
            expected, version, updated_at = None, thread.version, to_utc(thread.updated_at)
        else:
            expected, version = thread.version, thread.version + 1
            updated_at = self._now() if touch else to_utc(thread.updated_at)
        changes = compute_changes(
            thread,
            self._snapshots.get(thread),
            version=version,
            updated_at=updated_at,
            expected_version=expected,
            ttl=ttl,
        )
        op.messages = len(changes.messages)
        with self._wrapped("save"):
            await self._backend.write(changes)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "saved thread %s v%d (%s: +%d ~%d -%d)",
                thread.id,
                version,
                "full" if changes.full else "delta",
                len(changes.added),
                len(changes.changed),
                len(changes.removed),
            )
        # Success: bring the caller's object in line with what was stored.
        thread.version = version
        thread.updated_at = updated_at
        if not expected:  # created (0) or replaced without a check (None): a new incarnation
            set_incarnation(thread, changes.incarnation)
        thread.created_at = changes.thread.created_at
        # Sequences assigned and datetimes normalised. Nothing else is replaced: the caller may
        # hold references into the message (an attachment, say) and keep editing through them.
        for mine, stored in changes.copies:
            mine.sequence = stored.sequence
            mine.timestamp = stored.timestamp
        if changes.snapshot is not None:
            self._snapshots.put(thread, changes.snapshot)
        return thread

    async def append(self, thread_id: str, *messages: Message) -> list[Message]:
        """Add messages to a stored thread without loading it.

        Sequences are assigned server-side (highest + 1 upward, atomically), system messages are
        dropped, the stored version goes up by one and ``updated_at`` becomes now.

        Returns:
            Copies of the stored messages, with their sequences.

        Raises:
            ThreadNotFoundError: no such thread.
            ValueError: two messages share an id, or the thread already has one of the ids.
        """
        with self._operation("append", thread_id) as op:
            added = await self._append(thread_id, messages)
            op.messages = len(added)
            return added

    async def _append(self, thread_id: str, messages: tuple[Message, ...]) -> list[Message]:
        check_thread_id(thread_id)
        copies = []
        for message in messages:
            if not isinstance(message, Message):
                raise TypeError(f"append() takes Messages, not {type(message).__name__}")
            if message.role != "system":
                copy = Message.model_validate(message.model_dump(round_trip=True))
                copy.sequence = None
                copies.append(copy)
        seen: set[str] = set()
        for copy in copies:
            if copy.id in seen:
                raise ValueError(f"two messages have the id {copy.id!r}")
            seen.add(copy.id)
        await self.initialize()
        if not copies:
            if await self.get(thread_id) is None:
                raise ThreadNotFoundError(f"no thread {thread_id!r}")
            return []
        with self._wrapped("append"):
            return await self._backend.append(thread_id, copies, updated_at=self._now())

    async def delete(self, thread_id: str) -> bool:
        """Delete a thread and its messages; ``True`` if it existed."""
        with self._operation("delete", thread_id) as op:
            check_thread_id(thread_id)
            deleted = await self._call("delete", lambda: self._backend.delete(thread_id))
            if not deleted:
                op.outcome = "missing"
            return deleted

    # -- reads ---------------------------------------------------------------------------------

    def _remember(self, threads: builtins.list[Thread]) -> builtins.list[Thread]:
        for thread in threads:
            self._snapshots.put(thread, snapshot_of(thread))
        return threads

    async def get(self, thread_id: str) -> Thread | None:
        """The thread with its messages in sequence order, or ``None``."""
        with self._operation("get", thread_id) as op:
            check_thread_id(thread_id)
            thread = await self._call("get", lambda: self._backend.get(thread_id))
            if thread is None:
                op.outcome = "missing"
            else:
                op.messages = len(thread.messages)
                self._remember([thread])
            return thread

    async def list(self, limit: int = 100, offset: int = 0) -> builtins.list[Thread]:
        """Threads, most recently updated first (ties: id descending)."""
        with self._operation("list") as op:
            limit, offset = check_page(limit, offset, limit_required=True)
            page = await self._call(
                "list", lambda: self._backend.list_page(limit=limit, offset=offset)
            )
            return self._read_many(op, page)

    async def list_recent(self, limit: int | None = None) -> builtins.list[Thread]:
        """The most recently updated threads; all of them when ``limit`` is ``None``."""
        with self._operation("list_recent") as op:
            limit, _ = check_page(limit, 0)
            page = await self._call("list", lambda: self._backend.list_page(limit=limit, offset=0))
            return self._read_many(op, page)

    async def list_threads(
        self, limit: int = 100, offset: int = 0
    ) -> tuple[builtins.list[Thread], int]:
        """Tyler's name: a page of threads and the total number of threads."""
        threads = await self.list(limit, offset)
        return threads, await self.count()

    async def count(self) -> int:
        """How many threads the store holds."""
        with self._operation("count") as op:
            total = await self._call("count", self._backend.count)
            op.threads = total
            return total

    async def find_by_attributes(
        self, attributes: Mapping[str, Any], *, limit: int | None = None, offset: int = 0
    ) -> builtins.list[Thread]:
        """Threads whose attributes hold every given key with an equal JSON value.

        Equality is type-strict (``1 != "1"``, ``True != 1``) with numbers by value
        (``1 == 1.0``); ``None`` matches a key present and null. Same order as :meth:`list`.

        Raises:
            ValueError: ``attributes`` is empty or holds a non-JSON value.
        """
        with self._operation("find_by_attributes") as op:
            wanted = check_filter(attributes, "attributes")
            if not wanted:
                raise ValueError("find_by_attributes() needs at least one attribute")
            limit, offset = check_page(limit, offset)
            page = await self._call(
                "find_by_attributes",
                lambda: self._backend.find_by_attributes(wanted, limit=limit, offset=offset),
            )
            return self._read_many(op, page)

    async def find_by_source(
        self,
        name: str,
        properties: Mapping[str, Any] | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
    ) -> builtins.list[Thread]:
        """Threads whose ``source["name"]`` is ``name`` and whose source holds every given
        property (equality as in :meth:`find_by_attributes`). Same order as :meth:`list`."""
        with self._operation("find_by_source") as op:
            if not isinstance(name, str):
                raise TypeError(f"a source name is a str, not {type(name).__name__}")
            check_text(name, "the source name")
            wanted = check_filter(properties or {}, "properties")
            limit, offset = check_page(limit, offset)
            page = await self._call(
                "find_by_source",
                lambda: self._backend.find_by_source(name, wanted, limit=limit, offset=offset),
            )
            return self._read_many(op, page)

    async def search_threads(
        self, query: str, *, limit: int = 20, offset: int = 0
    ) -> tuple[builtins.list[Thread], int]:
        """Threads with a message containing every word of ``query`` (case-insensitive), and the
        total number of matches (``search`` capability)."""
        with self._operation("search_threads") as op:
            if not self.capabilities.search:
                raise NotSupportedError(f"{type(self._backend).__name__} does not support search")
            if not isinstance(query, str):
                raise TypeError(f"a query is a str, not {type(query).__name__}")
            words = _WORD.findall(check_text(query, "the query").lower())
            if not words:
                raise ValueError("a search query needs at least one word")
            limit, offset = check_page(limit, offset, limit_required=True)
            threads, total = await self._call(
                "search", lambda: self._backend.search(words, limit=limit, offset=offset)
            )
            return self._read_many(op, threads), total

    # -- helpers -------------------------------------------------------------------------------

    def _now(self) -> datetime:
        return to_utc(self._clock())

    def _check_ttl(self, ttl: float | None) -> float | None:
        if ttl is None:
            return self._options.ttl
        if not self.capabilities.ttl:
            raise NotSupportedError(f"{type(self._backend).__name__} does not support ttl")
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < float("inf"):
            raise ValueError(f"ttl must be a positive number of seconds, not {ttl!r}")
        if ttl > MAX_TTL:
            raise ValueError(f"ttl must be at most {MAX_TTL:,} seconds (100 years), not {ttl!r}")
        return float(ttl)
