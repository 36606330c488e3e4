"""The contract a storage backend implements: :class:`StorageBackend` and :class:`Capabilities`.

A backend owns storage and nothing else. The :class:`~tyler_core.store.ThreadStore` facade does
everything that is the same for every backend before it calls these methods: it drops system
messages, checks arguments, validates models, stamps versions and timestamps, works out what
changed since the thread was loaded (:class:`~tyler_core.changes.ThreadChanges`), masks
credentials and wraps driver errors. So a backend can assume:

* every argument is valid (limits and offsets are non-negative ints, ids are valid ids,
  attribute values are JSON values);
* messages it is handed never have ``role == "system"`` and always have a ``sequence``;
* calls may come concurrently from many tasks of one event loop, and from other processes or
  store instances on the same server.

And it must guarantee:

* **Atomicity** (rule 3): after a crash or a driver error the stored thread is the old one or the
  new one, never a mix. ``write`` and ``append`` check the version and write in one atomic step.
* **No aliasing**: never keep a reference to an object it is handed, never hand out one it keeps.
* **Fidelity**: ``get`` returns what was written, field for field (datetimes to the microsecond in
  UTC, JSON values with their types: ``1``, ``1.0`` and ``True`` stay distinct).
* **Order**: ``list_page`` and the ``find_*`` methods order threads by ``updated_at`` descending,
  then ``id`` descending compared by code point; messages come in ``sequence`` order.
* **Namespaces**: everything it stores and reads is confined to ``options.namespace``.
* **TTL** (if it declares ``ttl``): a thread expires ``ttl`` seconds after its last write or
  append; from then on every read treats it as absent, whole.

Driver errors may propagate as they are: the facade wraps them in
:class:`~tyler_core.errors.BackendError`. Errors that are part of the contract
(:class:`~tyler_core.errors.ConcurrencyError`, :class:`~tyler_core.errors.ThreadNotFoundError`,
:class:`~tyler_core.errors.StoreConnectionError`) are raised as they are.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, Self

from tyler_core.errors import NotSupportedError

if TYPE_CHECKING:
    from tyler_core.changes import ThreadChanges
    from tyler_core.models import Message, Thread
    from tyler_core.settings import StoreOptions

__all__ = ["Capabilities", "StorageBackend"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities:
    """Optional features a backend declares. Everything else in the contract is mandatory.

    Attributes:
        search: ``search`` is implemented (full-text search over message content).
        ttl: threads can expire (``ttl`` option per store and per save).
        shared_across_instances: two stores opened on the same URL and namespace see each
            other's writes (true for servers; false for plain memory and ``:memory:`` SQLite).
    """

    search: bool = False
    ttl: bool = False
    shared_across_instances: bool = False

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The names of all capabilities."""
        return tuple(f.name for f in fields(cls))


class StorageBackend(ABC):
    """What a backend author writes. See the module docstring for what the facade guarantees.

    A backend is constructed by :meth:`from_url` (cheap, no I/O), then :meth:`open` connects and
    prepares the schema, the storage methods run, and :meth:`close` releases what it opened.
    ``capabilities`` may be replaced per instance in ``open`` (for example, after asking the
    server what it supports).
    """

    #: What this backend supports beyond the mandatory contract.
    capabilities: Capabilities = Capabilities()

    # -- lifecycle -----------------------------------------------------------------------------

    @classmethod
    @abstractmethod
    def from_url(cls, url: str, options: StoreOptions) -> Self:
        """Build a backend for ``url`` without connecting.

        Args:
            url: the URL as the user gave it, minus the facade's own query parameters
                (``namespace``, ``ttl``, ...); ``""`` when the user gave none.
            options: the resolved :class:`~tyler_core.settings.StoreOptions`.

        Raises:
            ValueError: the URL or an option is not usable by this backend.
        """

    @abstractmethod
    async def open(self) -> None:
        """Connect and create or check the schema. Idempotent.

        Raises:
            StoreConnectionError: the server is unreachable, refuses the credentials, or the
                schema is outdated (the message says how to upgrade it). Must be raised within
                ``options.connect_timeout``. The message must not contain a password.
        """

    @abstractmethod
    async def close(self) -> None:
        """Release pools and connections this backend created. Idempotent."""

    @abstractmethod
    async def purge(self) -> None:
        """Delete every thread of this backend's namespace (tests call it after each test)."""

    async def drop(self) -> None:
        """Remove the namespace itself: its data and whatever holds it (tables, indexes).

        The conformance suite calls it after ``purge()`` when a test's throwaway namespace is
        done with, so running the suite against a live server leaves nothing behind. The store
        is not used afterwards. The default only calls :meth:`purge`; backends whose namespaces
        own schema objects (SQL tables) override it.
        """
        await self.purge()

    async def storage_size(self) -> int | None:
        """Bytes this namespace occupies on the server (data and indexes), as far as the
        backend can tell, or ``None`` if it cannot. For operators (``tyler-store stats``); may
        be approximate and may scan. The default: ``None``."""
        return None

    @property
    def engine(self) -> Any:
        """The underlying engine, for backends that have one (SQLAlchemy's ``AsyncEngine``)."""
        return None

    # -- writes --------------------------------------------------------------------------------

    @abstractmethod
    async def write(self, changes: ThreadChanges) -> None:
        """Store a thread's changes atomically, guarded by its version.

        When ``changes.expected_version`` is not ``None``, the write happens only if the stored
        version equals it (a thread not stored counts as 0); otherwise raise
        :class:`~tyler_core.errors.ConcurrencyError` and write nothing. When it is ``None``
        (``preserve=True``: copies and imports), write without checking.

        Incarnations: a thread stored again under an id after a delete is another thread. When
        ``changes.expected_version`` > 0 and ``changes.expected_incarnation`` is not ``None``,
        the stored thread's incarnation token must equal it too (same error otherwise). A write
        that creates the thread, or writes without a check, stores ``changes.incarnation``; any
        other write keeps the stored token. ``get``, ``list_page`` and the ``find_*`` methods
        return the stored token on each thread with :func:`tyler_core.models.set_incarnation`.

        When ``changes.full`` is true, replace the stored thread whole: its messages become
        exactly ``changes.messages``. Otherwise write only ``added``, ``changed`` and
        ``removed`` (and the thread's fields if ``thread_changed``); every other stored message
        is unchanged and must not be rewritten. The thread row always gets ``changes.version``
        and ``changes.updated_at``.

        If the backend declares ``ttl`` and ``changes.ttl`` is not ``None``, the thread expires
        ``changes.ttl`` seconds from now; ``None`` means no expiry.
        """

    @abstractmethod
    async def append(
        self,
        thread_id: str,
        messages: Sequence[Message],
        *,
        updated_at: datetime,
    ) -> list[Message]:
        """Append ``messages`` to a stored thread without loading it, atomically.

        Assign sequences from the stored highest + 1 upward (ignoring the messages' own), bump
        the stored version by one, set ``updated_at``. With the ``ttl`` capability, restart the
        thread's expiry with the TTL it was last written with (none if it has none). Return
        copies of the messages with their new sequences. Concurrent appends and writes never
        lose a message and never share a sequence.

        Raises:
            ThreadNotFoundError: no such thread (or it expired).
            ValueError: a message id already exists in the thread; nothing is written.
        """

    @abstractmethod
    async def delete(self, thread_id: str) -> bool:
        """Delete a thread with its messages, reactions and attachment rows; ``True`` if it
        existed."""

    # -- reads ---------------------------------------------------------------------------------

    @abstractmethod
    async def get(self, thread_id: str) -> Thread | None:
        """The stored thread with its messages in sequence order, or ``None``."""

    @abstractmethod
    async def list_page(self, *, limit: int | None, offset: int) -> list[Thread]:
        """Threads in the contract's order (``updated_at`` desc, ``id`` desc), ``limit=None``
        meaning all. Messages are loaded only for the threads returned."""

    @abstractmethod
    async def find_by_attributes(
        self, attributes: Mapping[str, Any], *, limit: int | None, offset: int
    ) -> list[Thread]:
        """Threads whose ``attributes`` hold every given key with an equal JSON value.

        Equality is that of :func:`~tyler_core.jsonvalues.canonical_json`. ``attributes`` is
        never empty. Keys are data: dots, quotes, ``$`` and the like must never become syntax.
        Same order as :meth:`list_page`.
        """

    @abstractmethod
    async def find_by_source(
        self,
        name: str,
        properties: Mapping[str, Any],
        *,
        limit: int | None,
        offset: int,
    ) -> list[Thread]:
        """Threads whose ``source["name"] == name`` and whose source holds every given property
        with an equal JSON value (as :meth:`find_by_attributes`). Same order as
        :meth:`list_page`."""

    @abstractmethod
    async def count(self) -> int:
        """How many threads the namespace holds."""

    # -- capabilities --------------------------------------------------------------------------

    async def search(
        self, words: Sequence[str], *, limit: int, offset: int
    ) -> tuple[list[Thread], int]:
        """Threads with a message containing every word (case-insensitive), ordered as
        :meth:`list_page`, and the total number of matches. Only with the ``search``
        capability. ``words`` are lowercase and non-empty."""
        raise NotSupportedError(f"{type(self).__name__} does not support search")
