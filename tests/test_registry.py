"""Scheme lookup: exact, lazy, with errors that say what to do."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tyler_core import (
    BackendNotFoundError,
    BackendSpec,
    MemoryBackend,
    MissingDependencyError,
    StoreOptions,
    Thread,
    ThreadStore,
    available_backends,
    register_backend,
    unregister_backend,
)
from tyler_core.registry import normalize_url, resolve_backend

DRIVERS = ("pymongo", "redis", "sqlalchemy", "asyncpg", "aiosqlite", "asyncmy", "psycopg")


def run_python(code: str, *extra_path: Path) -> subprocess.CompletedProcess[str]:
    env_path = ":".join(str(p) for p in extra_path)
    prelude = f"import sys; sys.path[:0] = {env_path.split(':') if env_path else []!r}\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


class LoudMemory(MemoryBackend):
    """A MemoryBackend registered at run time, to see which class served a URL."""


@pytest.fixture
def registered() -> Iterator[None]:
    yield
    unregister_backend("memory")
    unregister_backend("mydb")
    unregister_backend("mydb+fast")


def test_unknown_scheme_lists_installed_and_suggests_close_matches() -> None:
    with pytest.raises(BackendNotFoundError) as caught:
        ThreadStore("memroy://x")
    message = str(caught.value)
    assert "no backend for the URL scheme 'memroy'" in message
    assert "did you mean 'memory'" in message
    assert "Installed schemes: " in message and "memory" in message
    assert isinstance(caught.value, ValueError)


def test_unknown_postgres_typo_suggests_the_real_scheme() -> None:
    with pytest.raises(BackendNotFoundError, match="did you mean 'postgres'"):
        ThreadStore("postgress://user:hunter2@db/x")


def test_lookup_is_exact_and_never_falls_back_to_another_driver() -> None:
    with pytest.raises(BackendNotFoundError, match="'postgresql\\+pg8000'"):
        ThreadStore("postgresql+pg8000://u@h/db")


@pytest.mark.parametrize(
    "url", ["localhost:5432/db", "just some text", "://nothing", "1abc://x", "threads.json"]
)
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(BackendNotFoundError, match=r"malformed store URL|bad scheme"):
        ThreadStore(url)


def test_malformed_url_error_masks_the_password() -> None:
    with pytest.raises(BackendNotFoundError) as caught:
        ThreadStore("bad scheme://user:hunter2@host/db")
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, "memory://"),
        ("", "memory://"),
        (":memory:", "sqlite+aiosqlite:///:memory:"),
        ("threads.db", "sqlite+aiosqlite:///threads.db"),
        ("data/threads.sqlite", "sqlite+aiosqlite:///data/threads.sqlite"),
        ("/abs/threads.sqlite3", "sqlite+aiosqlite:////abs/threads.sqlite3"),
        ("redis://h:6379/0", "redis://h:6379/0"),
    ],
)
def test_tyler_names_mean_sqlite(given: str | None, expected: str) -> None:
    assert normalize_url(given) == expected


def test_no_url_means_memory() -> None:
    assert isinstance(ThreadStore().backend, MemoryBackend)
    assert ThreadStore().database_url is None


def test_register_backend_wins_over_entry_points(registered: None) -> None:
    register_backend("memory", LoudMemory)
    assert type(ThreadStore("memory://").backend) is LoudMemory
    unregister_backend("memory")
    assert type(ThreadStore("memory://").backend) is MemoryBackend


def test_register_backend_takes_a_lazy_target_string(registered: None) -> None:
    register_backend("mydb+fast", f"{__name__}:LoudMemory")
    assert resolve_backend("mydb+fast://") is LoudMemory
    with pytest.raises(BackendNotFoundError):
        resolve_backend("mydb://")  # exact: the bare name is a different scheme


def test_register_backend_refuses_a_non_scheme() -> None:
    with pytest.raises(ValueError, match="not a URL scheme"):
        register_backend("no spaces", LoudMemory)


@pytest.mark.parametrize("backend", [dict, LoudMemory("", StoreOptions()), 42, Thread])
def test_register_backend_refuses_what_is_no_backend_class(
    registered: None, backend: object
) -> None:
    with pytest.raises(TypeError, match="takes a StorageBackend subclass"):
        register_backend("mydb", backend)  # type: ignore[arg-type]
    with pytest.raises(BackendNotFoundError, match="no backend for the URL scheme 'mydb'"):
        ThreadStore("mydb://")


@pytest.mark.parametrize(
    "target", ["tyler_core.memory", "tyler_core.memory:", ":MemoryBackend", "a b:C", "m:C.D", ""]
)
def test_register_backend_refuses_a_target_that_names_no_class(
    registered: None, target: str
) -> None:
    with pytest.raises(TypeError, match="a backend target is 'module:Class'"):
        register_backend("mydb", target)
    with pytest.raises(TypeError, match="a backend target is 'module:Class'"):
        register_backend("mydb", BackendSpec(target=target))


@pytest.mark.parametrize(
    ("url", "drivers", "scheme"),
    [
        ("postgresql+pg8000://u@h/db", "asyncpg and psycopg", "postgresql+asyncpg"),
        ("postgres+pg8000://u@h/db", "asyncpg and psycopg", "postgresql+psycopg"),
        ("mysql+aiomysql://u@h/db", "asyncmy", "mariadb+asyncmy"),
        ("sqlite+pysqlite:///x.db", "aiosqlite", "sqlite+aiosqlite"),
        ("mongodb+motor://h", "pymongo", "mongodb+srv"),
    ],
)
def test_an_unsupported_driver_of_our_databases_names_the_supported_ones(
    url: str, drivers: str, scheme: str
) -> None:
    with pytest.raises(BackendNotFoundError) as caught:
        ThreadStore(url)
    message = str(caught.value)
    assert f"This database is served with {drivers} only, as: " in message
    assert scheme in message.split("as: ")[1]
    assert "pip install" not in message


def test_an_unknown_scheme_with_nothing_close_is_one_sentence_per_fact() -> None:
    with pytest.raises(BackendNotFoundError) as caught:
        ThreadStore("http://x")
    message = str(caught.value)
    assert message.startswith("no backend for the URL scheme 'http'. Installed schemes: ")
    assert message.endswith(".")


def test_a_plus_in_an_entry_point_name_is_ignored_with_a_warning(tmp_path: Path) -> None:
    _fake_distribution(tmp_path, "plus_store", "kvplus+bad = tyler_core.memory:MemoryBackend")
    result = run_python(
        """
        import warnings
        from tyler_core import ThreadStore, BackendNotFoundError, available_backends
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            print([b.scheme for b in available_backends() if b.scheme.startswith("kvplus")])
        print([str(w.message) for w in caught])
        try:
            ThreadStore("kvplus+bad://x")
        except BackendNotFoundError as exc:
            print("did you mean" in str(exc))
        """,
        tmp_path,
    )
    lines = result.stdout.splitlines()
    assert lines[0] == "[]", result.stderr
    assert "entry point 'kvplus+bad' of plus_store: write '+' as '.' ('kvplus.bad')" in lines[1]
    assert lines[2] == "False"


def test_a_target_that_is_not_a_backend_is_refused(registered: None) -> None:
    register_backend("mydb", "tyler_core.models:Thread")
    with pytest.raises(BackendNotFoundError, match="not a StorageBackend subclass"):
        ThreadStore("mydb://")


def test_missing_driver_names_the_exact_extra(registered: None) -> None:
    register_backend(
        "mydb",
        BackendSpec(
            target="tyler_core.memory:MemoryBackend",
            requires=("tyler_no_such_driver",),
            install="tyler-threadstore[mongo]",
        ),
    )
    with pytest.raises(MissingDependencyError) as caught:
        ThreadStore("mydb://h")
    assert str(caught.value) == (
        "the 'mydb' backend needs tyler_no_such_driver: pip install \"tyler-threadstore[mongo]\""
    )
    assert isinstance(caught.value, ImportError)


@pytest.mark.parametrize(
    ("url", "module", "extra"),
    [
        ("mongodb://h/db", "pymongo", "mongo"),
        ("redis://h", "redis", "redis"),
        ("postgresql+asyncpg://u@h/db", "asyncpg", "postgres"),
        ("postgresql+psycopg://u@h/db", "psycopg", "psycopg"),
        ("mysql+asyncmy://u@h/db", "asyncmy", "mysql"),
        ("sqlite+aiosqlite:///x.db", "aiosqlite", "sqlite"),
    ],
)
def test_our_backends_name_their_extra_when_the_driver_is_missing(
    url: str, module: str, extra: str
) -> None:
    scheme = url.split("://")[0]
    result = run_python(
        f"""
        sys.modules[{module!r}] = None  # as if it were not installed
        from tyler_core import ThreadStore, MissingDependencyError
        try:
            ThreadStore({url!r})
        except MissingDependencyError as exc:
            print(exc)
        """
    )
    assert result.stdout.strip() == (
        f'the {scheme!r} backend needs {module}: pip install "tyler-threadstore[{extra}]"'
    ), result.stderr


def _fake_distribution(root: Path, name: str, entry: str) -> None:
    info = root / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[tyler.thread_stores]\n{entry}\n")


def test_two_packages_claiming_one_scheme_is_an_error_naming_both(tmp_path: Path) -> None:
    _fake_distribution(tmp_path, "acme_store", "acme = tyler_core.memory:MemoryBackend")
    _fake_distribution(tmp_path, "other_store", "acme = tyler_jsonfile.backend:JSONFileBackend")
    result = run_python(
        """
        from tyler_core import ThreadStore, AmbiguousBackendError
        try:
            ThreadStore("acme://x")
        except AmbiguousBackendError as exc:
            print(exc)
        ThreadStore("memory://")  # other schemes are unaffected
        print("ok")
        """,
        tmp_path,
    )
    out = result.stdout
    assert "acme_store" in out and "other_store" in out, result.stderr
    assert "register_backend('acme'" in out
    assert out.strip().endswith("ok")


def test_third_party_entry_point_serves_its_scheme(tmp_path: Path) -> None:
    _fake_distribution(tmp_path, "acme_store", "acme = tyler_core.memory:MemoryBackend")
    result = run_python(
        """
        from tyler_core import ThreadStore, available_backends
        print(type(ThreadStore("acme://").backend).__name__)
        print([b.provider for b in available_backends() if b.scheme == "acme"])
        """,
        tmp_path,
    )
    assert result.stdout.split("\n")[:2] == ["MemoryBackend", "['acme_store']"], result.stderr


def test_an_entry_point_that_is_no_backend_is_reported(tmp_path: Path) -> None:
    _fake_distribution(tmp_path, "broken_store", "broken = tyler_core.models:utc_now")
    result = run_python(
        """
        from tyler_core import ThreadStore, BackendNotFoundError
        try:
            ThreadStore("broken://")
        except BackendNotFoundError as exc:
            print(exc)
        """,
        tmp_path,
    )
    assert "neither a BackendSpec nor a StorageBackend subclass" in result.stdout, result.stderr
    assert "broken_store" in result.stdout


def test_available_backends_reports_ours() -> None:
    schemes = {b.scheme: b for b in available_backends()}
    assert schemes["memory"].installed
    for scheme in ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "redis", "mongodb"):
        assert scheme in schemes, scheme
    assert schemes["postgresql+psycopg"].install == "tyler-threadstore[psycopg]"


def test_importing_tyler_core_loads_no_driver() -> None:
    result = run_python(
        f"""
        import tyler_core
        from tyler_core import ThreadStore, available_backends
        available_backends()
        ThreadStore("memory://")
        import tyler_sql._spec, tyler_redis._spec, tyler_mongo._spec
        drivers = {DRIVERS!r} + ("pytest", "hypothesis", "pymongo", "alembic")
        print(sorted(m for m in drivers if m in sys.modules))
        """
    )
    assert result.stdout.strip() == "[]", result.stderr
