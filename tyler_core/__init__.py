"""tyler-threadstore: conversation storage for AI agents behind one ``ThreadStore`` API.

``import tyler_core`` loads no database driver; a backend's driver is imported when its URL
scheme is first used.
"""

from __future__ import annotations

from tyler_core.backend import Capabilities, StorageBackend
from tyler_core.changes import ThreadChanges
from tyler_core.errors import (
    AmbiguousBackendError,
    BackendError,
    BackendNotFoundError,
    ConcurrencyError,
    MissingDependencyError,
    NotSupportedError,
    StoreConnectionError,
    ThreadNotFoundError,
    TylerStoreError,
)
from tyler_core.jsonvalues import canonical_json
from tyler_core.memory import MemoryBackend
from tyler_core.models import Attachment, Message, Thread, set_incarnation
from tyler_core.registry import (
    BackendInfo,
    BackendSpec,
    available_backends,
    register_backend,
    unregister_backend,
)
from tyler_core.settings import StoreOptions
from tyler_core.store import ThreadStore
from tyler_core.urls import mask_url

__all__ = [
    "AmbiguousBackendError",
    "Attachment",
    "BackendError",
    "BackendInfo",
    "BackendNotFoundError",
    "BackendSpec",
    "Capabilities",
    "ConcurrencyError",
    "MemoryBackend",
    "Message",
    "MissingDependencyError",
    "NotSupportedError",
    "StorageBackend",
    "StoreConnectionError",
    "StoreOptions",
    "Thread",
    "ThreadChanges",
    "ThreadNotFoundError",
    "ThreadStore",
    "TylerStoreError",
    "available_backends",
    "canonical_json",
    "mask_url",
    "register_backend",
    "set_incarnation",
    "unregister_backend",
]

__version__ = "0.1.0"
