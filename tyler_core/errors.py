"""The exception tree of tyler-threadstore.

Every error the library raises on purpose derives from :class:`TylerStoreError`::

    TylerStoreError
    ├── BackendNotFoundError      (also ValueError)   unknown URL scheme, or a malformed URL
    ├── AmbiguousBackendError                         two packages claim one scheme
    ├── MissingDependencyError    (also ImportError)  the backend's driver is not installed
    ├── StoreConnectionError                          cannot connect, or the schema is unusable
    ├── ConcurrencyError                              stale version: nothing was written
    ├── ThreadNotFoundError       (also KeyError)     append() to a thread that does not exist
    ├── NotSupportedError                             a capability the backend does not declare
    └── BackendError                                  a driver error, wrapped (``raise ... from``)

Misuse of the API (a negative limit, an empty attribute filter, a bad namespace) raises
``ValueError`` or ``TypeError``; invalid models raise pydantic's ``ValidationError``.
Messages never contain credentials: URLs are masked before they reach any error text.
"""

from __future__ import annotations

__all__ = [
    "AmbiguousBackendError",
    "BackendError",
    "BackendNotFoundError",
    "ConcurrencyError",
    "MissingDependencyError",
    "NotSupportedError",
    "StoreConnectionError",
    "ThreadNotFoundError",
    "TylerStoreError",
]


class TylerStoreError(Exception):
    """Root of every error raised by tyler-threadstore."""


class BackendNotFoundError(TylerStoreError, ValueError):
    """No backend is registered for the URL's scheme, or the URL is malformed."""


class AmbiguousBackendError(TylerStoreError):
    """Two installed packages register the same URL scheme."""


class MissingDependencyError(TylerStoreError, ImportError):
    """The backend for a scheme needs a driver that is not installed."""


class StoreConnectionError(TylerStoreError):
    """The store could not connect, or its schema cannot be used as it is."""


class ConcurrencyError(TylerStoreError):
    """The stored version differs from the caller's: the thread changed since it was loaded.

    Nothing was written. Reload the thread, apply the change again and save.
    """


class ThreadNotFoundError(TylerStoreError, KeyError):
    """An operation that needs an existing thread did not find it."""

    def __str__(self) -> str:
        # KeyError quotes its argument; a sentence reads better.
        return str(self.args[0]) if self.args else "thread not found"


class NotSupportedError(TylerStoreError):
    """The backend does not declare the capability this call needs."""


class BackendError(TylerStoreError):
    """A driver or server error, wrapped; the original is the ``__cause__``."""
