"""The facade's error wrapping: a driver error raised inside a store operation becomes a
:class:`~tyler_core.errors.BackendError` (a :class:`~tyler_core.errors.StoreConnectionError` while
connecting), logged, with credentials scrubbed from its message."""

from __future__ import annotations

import logging
from types import TracebackType
from typing import TYPE_CHECKING

from pydantic import ValidationError

from tyler_core.errors import BackendError, StoreConnectionError, TylerStoreError

__all__ = ["ErrorWrapper"]

if TYPE_CHECKING:
    from tyler_core.store import ThreadStore

logger = logging.getLogger("tyler_core")


class ErrorWrapper:
    """Wrap driver errors in :class:`BackendError` (or :class:`StoreConnectionError` while
    connecting), with credentials scrubbed from the message."""

    def __init__(self, store: ThreadStore, operation: str, connecting: bool) -> None:
        self._store = store
        self._operation = operation
        self._connecting = connecting

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or not isinstance(exc, Exception):
            return
        store = self._store
        if isinstance(exc, TylerStoreError):
            text = str(exc)
            scrubbed = store._scrub(text)
            if self._connecting:
                # A backend's own StoreConnectionError (refused login, outdated schema, timeout)
                # is as much an operator's problem as a wrapped driver error.
                logger.warning("%s", scrubbed)
            if scrubbed != text:
                raise type(exc)(scrubbed) from None
            return
        if isinstance(exc, ValidationError | ValueError | TypeError) and not self._connecting:
            return
        detail = f"{type(exc).__name__}: {exc}"
        scrubbed = store._scrub(detail)
        cause = exc if scrubbed == detail else None
        if self._connecting:
            error: TylerStoreError = StoreConnectionError(
                f"could not open {store._masked}: {scrubbed}"
            )
        else:
            error = BackendError(f"{self._operation} failed on {store._masked}: {scrubbed}")
        logger.warning("%s", error)
        raise error from cause
