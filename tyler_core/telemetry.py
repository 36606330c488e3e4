"""What the store tells operators: a DEBUG log line and an OpenTelemetry span per operation.

The :class:`~tyler_core.store.ThreadStore` facade wraps every store operation (``save``, ``get``,
``delete``, ``list``, ``list_recent``, ``find_by_attributes``, ``find_by_source``, ``append``,
``count``, ``search_threads``) in :class:`Operation`. Both outputs carry the same facts and
nothing more:

* ``tyler.backend``: the URL scheme (``postgresql+asyncpg``, ``redis``, ``memory``...);
* ``tyler.operation``: the method name;
* ``tyler.thread_id``: the thread, for operations on one thread;
* ``tyler.message_count``: messages stored, read or appended; ``tyler.thread_count`` for reads
  of several threads;
* ``tyler.outcome``: ``ok``, ``missing`` (no such thread), ``conflict`` (a stale version),
  ``invalid`` (bad arguments or models) or ``error``.

Never message content, attribute values, search words or URLs: those can hold personal data
or credentials. Errors are recorded by their type only, because a pydantic ``ValidationError``
quotes the offending input.

Spans come from the tracer named ``tyler_core`` when ``opentelemetry-api`` is installed
(``pip install "tyler-threadstore[otel]"``); without it this module imports nothing and costs one
attribute check per operation, and with it but no tracer provider configured yet, one check of
the global provider. The log lines go to the ``tyler_core`` logger at DEBUG, built only
when that level is enabled.
"""

from __future__ import annotations

import logging
import time
from types import TracebackType
from typing import Any, Final

from pydantic import ValidationError

from tyler_core.errors import ConcurrencyError, ThreadNotFoundError

__all__ = ["TRACER_NAME", "Operation", "outcome_of", "tracer"]

logger = logging.getLogger("tyler_core")

#: The instrumentation scope of the spans.
TRACER_NAME: Final = "tyler_core"

_UNSET: Final[Any] = object()
_tracer: Any = _UNSET
_trace: Any = None  # the opentelemetry.trace module, once imported


def tracer() -> Any:
    """The OpenTelemetry tracer, or ``None`` when ``opentelemetry-api`` is not installed.

    Imported on first use, not with ``tyler_core``: applications without tracing pay nothing.
    The API's tracer is a proxy, so a tracer provider configured later still receives spans.
    """
    global _tracer, _trace
    if _tracer is _UNSET:
        try:
            from opentelemetry import trace
        except ImportError:
            _tracer = None
        else:
            _trace = trace
            _tracer = trace.get_tracer(TRACER_NAME)
    return _tracer


def _active_tracer() -> Any:
    """The tracer, or ``None`` while no tracer provider is configured: the API's proxy would
    hand out spans that record nothing, for about 10 us per operation. A provider set later
    (in code or through ``OTEL_PYTHON_TRACER_PROVIDER``) is seen at the next operation."""
    current = tracer()
    if current is None or isinstance(_trace.get_tracer_provider(), _trace.ProxyTracerProvider):
        return None
    return current


def outcome_of(exc: BaseException) -> str:
    """The ``tyler.outcome`` of an operation that raised ``exc``."""
    if isinstance(exc, ConcurrencyError):
        return "conflict"
    if isinstance(exc, ThreadNotFoundError):
        return "missing"
    if isinstance(exc, ValidationError | ValueError | TypeError):
        return "invalid"
    return "error"


class Operation:
    """One store operation: times it, traces it, and logs it at DEBUG when it ends.

    Use as ``with Operation(backend, "get", thread_id) as op:``, then set :attr:`messages`,
    :attr:`threads` or :attr:`outcome` (``ok`` by default; ``missing`` for a thread that is not
    there) before the block ends. An exception sets the outcome from its type and goes on.
    """

    __slots__ = (
        "_context",
        "_span",
        "_started",
        "backend",
        "messages",
        "name",
        "outcome",
        "thread_id",
        "threads",
    )

    def __init__(self, backend: str, name: str, thread_id: str | None = None) -> None:
        self.backend = backend
        self.name = name
        self.thread_id = thread_id
        self.messages: int | None = None
        self.threads: int | None = None
        self.outcome = "ok"
        self._context: Any = None
        self._span: Any = None
        self._started = 0.0

    def __enter__(self) -> Operation:
        self._started = time.perf_counter()
        current = _active_tracer()
        if current is not None:
            # Exceptions are recorded by type in __exit__: the SDK's own recording would put
            # the message (which may quote stored data) into the span.
            self._context = current.start_as_current_span(
                f"tyler.{self.name}", record_exception=False, set_status_on_exception=False
            )
            self._span = self._context.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self.outcome = outcome_of(exc)
        span = self._span
        if span is not None:
            try:
                if span.is_recording():
                    self._describe(span, exc)
            finally:
                self._context.__exit__(exc_type, exc, tb)
        if logger.isEnabledFor(logging.DEBUG):
            elapsed = (time.perf_counter() - self._started) * 1000
            logger.debug(
                "%s%s: %s%s%s in %.1f ms",
                self.name,
                "" if self.thread_id is None else f" thread {self.thread_id}",
                self.outcome,
                "" if self.messages is None else f", {self.messages} messages",
                "" if self.threads is None else f", {self.threads} threads",
                elapsed,
                extra={
                    "tyler_backend": self.backend,
                    "tyler_operation": self.name,
                    "tyler_thread_id": self.thread_id,
                    "tyler_outcome": self.outcome,
                    "tyler_duration_ms": elapsed,
                },
            )

    def _describe(self, span: Any, exc: BaseException | None) -> None:
        span.set_attribute("tyler.backend", self.backend)
        span.set_attribute("tyler.operation", self.name)
        span.set_attribute("tyler.outcome", self.outcome)
        if self.thread_id is not None:
            span.set_attribute("tyler.thread_id", self.thread_id)
        if self.messages is not None:
            span.set_attribute("tyler.message_count", self.messages)
        if self.threads is not None:
            span.set_attribute("tyler.thread_count", self.threads)
        if exc is not None and self.outcome in ("error", "invalid"):
            from opentelemetry.trace import Status, StatusCode

            span.set_attribute("error.type", type(exc).__name__)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
