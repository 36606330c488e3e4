"""Logging and tracing: every store operation is logged at DEBUG and traced as a span with its
backend, operation, thread id, message count and outcome, and neither ever carries a message's
content or a URL's password."""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.services import service_url
from tyler_core import (
    ConcurrencyError,
    Message,
    StoreConnectionError,
    Thread,
    ThreadStore,
    register_backend,
    unregister_backend,
)
from tyler_core.memory import MemoryBackend
from tyler_core.settings import StoreOptions
from tyler_core.telemetry import TRACER_NAME

PASSWORD = "s3cret-Pa55word"
SECRET_TEXT = "the-confidential-message-body"
SECRET_ATTRIBUTE = "the-private-attribute-value"
LOGGERS = ("tyler_core", "tyler_sql", "tyler_redis", "tyler_mongo")
# The Mongo test server can be slow to answer when other tests keep it busy.
_PATIENT: dict[str, Any] = {"connect_timeout": 30, "serverSelectionTimeoutMS": 30_000}

# -- fixtures ----------------------------------------------------------------------------------

_EXPORTER = InMemorySpanExporter()
_provider_installed = False


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The SDK's in-memory exporter, installed once per process (OpenTelemetry allows one
    global tracer provider) and emptied for each test."""
    global _provider_installed
    if not _provider_installed:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
        _provider_installed = True
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """Every record of the four tyler loggers, at DEBUG."""
    handler = _Records()
    saved = []
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
    yield handler.records
    for logger, level in saved:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _with_password(url: str) -> str:
    """``url`` with user ``tyler``'s or the URL's user's password set to :data:`PASSWORD`."""
    parts = urlsplit(url)
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{PASSWORD}@{host}"))


def _workload_thread() -> Thread:
    thread = Thread(title="t", attributes={"customer": SECRET_ATTRIBUTE}, source={"name": "slack"})
    thread.add_message(Message(role="system", content=SECRET_TEXT + "-system"))
    thread.add_message(Message(role="user", content=SECRET_TEXT))
    return thread


async def _workload(store: ThreadStore) -> str:
    """Every store operation once, plus a conflict; returns the thread's id."""
    thread = await store.save(_workload_thread())
    loaded = await store.get(thread.id)
    assert loaded is not None
    loaded.add_message(Message(role="assistant", content=SECRET_TEXT + "-reply"))
    await store.save(loaded)
    await store.append(thread.id, Message(role="user", content=SECRET_TEXT + "-appended"))
    stale = await store.get(thread.id)
    assert stale is not None
    await store.append(thread.id, Message(role="user", content=SECRET_TEXT + "-more"))
    with pytest.raises(ConcurrencyError):
        await store.save(stale)
    await store.list(limit=10)
    await store.list_recent(5)
    await store.count()
    await store.find_by_attributes({"customer": SECRET_ATTRIBUTE})
    await store.find_by_source("slack", {"channel": SECRET_ATTRIBUTE})
    if store.capabilities.search:
        await store.search_threads("confidential")
    await store.get("no-such-thread")
    await store.delete(thread.id)
    await store.delete(thread.id)
    return thread.id


def _leaks(records: list[logging.LogRecord]) -> list[str]:
    leaks = []
    for record in records:
        text = record.getMessage() + repr(record.__dict__)
        for secret in (PASSWORD, SECRET_TEXT, SECRET_ATTRIBUTE):
            if secret in text:
                leaks.append(f"{record.name}: {record.getMessage()}")
    return leaks


def _span_leaks(finished: tuple[ReadableSpan, ...]) -> list[str]:
    leaks = []
    for span in finished:
        text = repr(dict(span.attributes or {})) + span.name + str(span.status.description)
        text += repr([dict(e.attributes or {}) for e in span.events])
        for secret in (PASSWORD, SECRET_TEXT, SECRET_ATTRIBUTE):
            if secret in text:
                leaks.append(f"{span.name}: {text}")
    return leaks


# -- spans -------------------------------------------------------------------------------------


async def test_every_operation_is_a_span_with_its_facts(spans: InMemorySpanExporter) -> None:
    async with await ThreadStore.create("memory://") as store:
        thread_id = await _workload(store)
    finished = spans.get_finished_spans()
    assert {s.instrumentation_scope.name for s in finished if s.instrumentation_scope} == {
        TRACER_NAME
    }
    names = [s.name for s in finished]
    for operation in (
        "save",
        "get",
        "append",
        "list",
        "list_recent",
        "count",
        "find_by_attributes",
        "find_by_source",
        "search_threads",
        "delete",
    ):
        assert f"tyler.{operation}" in names, operation
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in finished:
        by_name.setdefault(span.name, []).append(dict(span.attributes or {}))
    first_save = by_name["tyler.save"][0]
    assert first_save == {
        "tyler.backend": "memory",
        "tyler.operation": "save",
        "tyler.outcome": "ok",
        "tyler.thread_id": thread_id,
        "tyler.message_count": 1,  # the system message is not stored
    }
    assert [a["tyler.outcome"] for a in by_name["tyler.save"]] == ["ok", "ok", "conflict"]
    assert by_name["tyler.append"][0]["tyler.message_count"] == 1
    assert by_name["tyler.get"][0]["tyler.message_count"] == 1
    assert by_name["tyler.get"][-1]["tyler.outcome"] == "missing"
    assert [a["tyler.outcome"] for a in by_name["tyler.delete"]] == ["ok", "missing"]
    assert by_name["tyler.count"][0]["tyler.thread_count"] == 1
    listed = by_name["tyler.list"][0]
    assert listed["tyler.thread_count"] == 1 and listed["tyler.message_count"] == 4
    assert not _span_leaks(finished)


async def test_a_failing_operation_records_the_error_type_not_its_message(
    spans: InMemorySpanExporter,
) -> None:
    async with await ThreadStore.create("memory://") as store:
        bad = Thread()
        bad.add_message(Message(role="user", content=SECRET_TEXT))
        # Invalid, and found by the save's checks, whose message names the offending key.
        bad.messages[0].attributes[SECRET_TEXT] = float("nan")
        with pytest.raises(ValueError) as raised:
            await store.save(bad)
    assert SECRET_TEXT in str(raised.value)  # so the span must not carry the message
    (span,) = [s for s in spans.get_finished_spans() if s.name == "tyler.save"]
    attributes = dict(span.attributes or {})
    assert attributes["tyler.outcome"] == "invalid"
    assert attributes["error.type"] in ("ValidationError", "ValueError")
    assert span.status.status_code == trace.StatusCode.ERROR
    assert not span.events  # no exception event: its message would quote the content
    assert not _span_leaks((span,))


async def test_spans_nest_under_the_callers_span(spans: InMemorySpanExporter) -> None:
    tracer = trace.get_tracer("the-application")
    async with await ThreadStore.create("memory://") as store:
        with tracer.start_as_current_span("handle-request") as parent:
            await store.count()
    (count,) = [s for s in spans.get_finished_spans() if s.name == "tyler.count"]
    assert count.parent is not None
    assert count.parent.span_id == parent.get_span_context().span_id


def test_without_opentelemetry_the_store_works_and_imports_none_of_it() -> None:
    code = (
        "import asyncio, sys\n"
        "sys.modules['opentelemetry'] = None  # as if it were not installed\n"
        "from tyler_core import ThreadStore, Thread\n"
        "async def main():\n"
        "    async with await ThreadStore.create() as store:\n"
        "        await store.save(Thread())\n"
        "        assert await store.count() == 1\n"
        "asyncio.run(main())\n"
        "import tyler_core.telemetry as t\n"
        "assert t.tracer() is None\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_spans_begin_once_a_tracer_provider_is_configured_after_the_store_ran() -> None:
    # Operations before any provider is set make no span at all; the first one after it does.
    # (A subprocess: OpenTelemetry takes one global provider per process.)
    code = (
        "import asyncio\n"
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from opentelemetry.sdk.trace.export import SimpleSpanProcessor\n"
        "from opentelemetry.sdk.trace.export.in_memory_span_exporter import (\n"
        "    InMemorySpanExporter,\n"
        ")\n"
        "from tyler_core import ThreadStore, Thread\n"
        "exporter = InMemorySpanExporter()\n"
        "async def main():\n"
        "    async with await ThreadStore.create() as store:\n"
        "        await store.save(Thread(id='before'))\n"
        "        provider = TracerProvider()\n"
        "        provider.add_span_processor(SimpleSpanProcessor(exporter))\n"
        "        trace.set_tracer_provider(provider)\n"
        "        await store.get('before')\n"
        "asyncio.run(main())\n"
        "print(sorted(s.name for s in exporter.get_finished_spans()))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['tyler.get']"


def test_importing_tyler_core_does_not_import_opentelemetry() -> None:
    code = "import sys, tyler_core; print('opentelemetry' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"


# -- logs --------------------------------------------------------------------------------------


async def test_operations_are_logged_at_debug_with_counts_and_durations(
    records: list[logging.LogRecord],
) -> None:
    async with await ThreadStore.create("memory://") as store:
        thread_id = await _workload(store)
    operations = [r for r in records if hasattr(r, "tyler_operation")]
    assert {r.levelno for r in operations} == {logging.DEBUG}
    saves = [r for r in operations if r.__dict__["tyler_operation"] == "save"]
    assert saves[0].getMessage().startswith(f"save thread {thread_id}: ok, 1 messages in ")
    assert saves[-1].__dict__["tyler_outcome"] == "conflict"
    assert all(r.__dict__["tyler_duration_ms"] >= 0 for r in operations)
    assert not _leaks(records)


async def test_nothing_is_logged_or_built_when_debug_is_off(
    records: list[logging.LogRecord],
) -> None:
    logging.getLogger("tyler_core").setLevel(logging.INFO)
    async with await ThreadStore.create("memory://") as store:
        await _workload(store)
    assert [r for r in records if r.name == "tyler_core"] == []


async def _run_logged_workload(url: str, records: list[logging.LogRecord], **options: Any) -> None:
    namespace = "log_" + uuid.uuid4().hex[:12]
    store = await ThreadStore.create(url, namespace=namespace, **options)
    try:
        await _workload(store)
    finally:
        await store.backend.purge()
        await store.backend.drop()
        await store.close()
    opened = [r.getMessage() for r in records if r.getMessage().startswith("opened ")]
    assert opened, "the store logs that it opened"
    if PASSWORD in url:
        assert any(":***@" in message for message in opened), opened
    assert not _leaks(records), _leaks(records)


async def test_postgres_logs_hold_no_password_and_no_content(
    records: list[logging.LogRecord],
) -> None:
    # Trust authentication accepts any password, so this URL works and carries one.
    url = _with_password(service_url("postgres"))
    await _run_logged_workload(url, records)
    assert any(r.name == "tyler_sql" for r in records)


async def test_sqlite_logs_hold_no_content(records: list[logging.LogRecord], tmp_path: Any) -> None:
    await _run_logged_workload(f"sqlite+aiosqlite:///{tmp_path}/log.db", records)


async def test_redis_logs_hold_no_password_and_no_content(
    records: list[logging.LogRecord],
) -> None:
    # A server without requirepass answers AUTH with an error that redis-py lets pass, so a
    # password-bearing URL works against it.
    await _run_logged_workload(_with_password(service_url("redis")), records)
    assert any(r.name == "tyler_redis" for r in records)


async def test_mongo_logs_hold_no_content(records: list[logging.LogRecord]) -> None:
    # The Mongo test server refuses every credential, so this URL carries none; the failed
    # login below covers the password.
    await _run_logged_workload(service_url("mongodb"), records, **_PATIENT)
    assert any(r.name == "tyler_mongo" for r in records)


async def test_a_refused_mongo_login_logs_no_password(records: list[logging.LogRecord]) -> None:
    url = _with_password(service_url("mongodb").replace("://", "://tyler@", 1))
    with pytest.raises(StoreConnectionError) as raised:
        await ThreadStore.create(url, **_PATIENT)
    assert PASSWORD not in str(raised.value)
    assert [r for r in records if r.levelno == logging.WARNING and r.name == "tyler_core"]
    assert not _leaks(records)


class _LoggedMemoryBackend(MemoryBackend):
    """A memory store behind a URL with credentials, like a third-party backend's."""

    @classmethod
    def from_url(cls, url: str, options: StoreOptions) -> _LoggedMemoryBackend:
        return cls("", options)


async def test_a_registered_backend_with_a_password_url_logs_it_masked(
    records: list[logging.LogRecord], spans: InMemorySpanExporter
) -> None:
    register_backend("pwmemory", _LoggedMemoryBackend)
    try:
        await _run_logged_workload(f"pwmemory://app:{PASSWORD}@db.example/x", records)
    finally:
        unregister_backend("pwmemory")
    backends = {dict(s.attributes or {}).get("tyler.backend") for s in spans.get_finished_spans()}
    assert backends == {"pwmemory"}
    assert not _span_leaks(spans.get_finished_spans())


async def test_a_failed_connection_is_a_warning_with_the_password_masked(
    records: list[logging.LogRecord],
) -> None:
    url = f"postgresql+asyncpg://tyler:{PASSWORD}@127.0.0.1:1/test"
    with pytest.raises(Exception, match=r"\*\*\*|could not open"):
        await ThreadStore.create(url, connect_timeout=2)
    warnings = [r for r in records if r.levelno == logging.WARNING]
    assert warnings, "a connection failure is logged as a warning"
    assert not _leaks(records)
