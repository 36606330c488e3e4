"""Keyword options: a misspelt one is refused instead of silently leaving its default in force."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Self

import pytest
from typing_extensions import override

from tyler_core import MemoryBackend, ThreadStore, register_backend, unregister_backend
from tyler_core.settings import StoreOptions

# Opening these builds the backend without connecting, so no server is needed.
NO_EXTRAS = ["memory://", "memory://shared", "sqlite+aiosqlite:///:memory:"]
SQL_SERVERS = ["postgresql+asyncpg://u@127.0.0.1:1/db", "mysql+asyncmy://u@127.0.0.1:1/db"]
DRIVER_EXTRAS: dict[str, tuple[str, dict[str, Any]]] = {
    "redis://127.0.0.1:1/0": ("redis", {"client_name": "me", "socket_connect_timeout": 3}),
    "mongodb://127.0.0.1:1": ("pymongo", {"connectTimeoutMS": 3000, "maxPoolSize": 4}),
}


class PassThroughBackend(MemoryBackend):
    """A backend that hands unknown keywords to its driver, as Redis and MongoDB do."""

    @classmethod
    @override
    def from_url(cls, url: str, options: StoreOptions) -> Self:
        return cls("", options)


@pytest.fixture(autouse=True)
def passthrough() -> Iterator[None]:
    register_backend("passthrough", PassThroughBackend)
    yield
    unregister_backend("passthrough")


@pytest.mark.parametrize("url", [*NO_EXTRAS, *SQL_SERVERS, *DRIVER_EXTRAS, "passthrough://"])
@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("namepsace", "namespace"),
        ("name_space", "namespace"),
        ("pool_sise", "pool_size"),
        ("transaction", "transactions"),
        ("conect_timeout", "connect_timeout"),
    ],
)
def test_a_misspelt_option_is_refused_with_the_option_it_resembles(
    url: str, typo: str, meant: str
) -> None:
    if url in DRIVER_EXTRAS:
        pytest.importorskip(DRIVER_EXTRAS[url][0])
    options: dict[str, Any] = {typo: "core_private"}
    with pytest.raises(TypeError, match=f"unknown store option '{typo}'; did you mean '{meant}'"):
        ThreadStore(url, **options)


@pytest.mark.parametrize("url", [*NO_EXTRAS, *SQL_SERVERS])
def test_a_backend_without_driver_options_refuses_any_unknown_keyword(url: str) -> None:
    with pytest.raises(TypeError, match=r"unknown store option 'echo' .* takes only namespace"):
        ThreadStore(url, echo=True)


@pytest.mark.parametrize("url", [*NO_EXTRAS, *SQL_SERVERS])
def test_a_far_off_misspelling_still_gets_a_suggestion_where_extras_are_refused(url: str) -> None:
    with pytest.raises(TypeError, match="'tll'; did you mean 'ttl'"):
        ThreadStore(url, tll=5)


@pytest.mark.parametrize("url", list(DRIVER_EXTRAS))
def test_driver_keywords_still_reach_the_driver_backends(url: str) -> None:
    module, keywords = DRIVER_EXTRAS[url]
    pytest.importorskip(module)
    store = ThreadStore(url, namespace="mine", **keywords)
    assert store.options.extra == keywords
    assert store.options.namespace == "mine"


def test_a_pass_through_backend_gets_keywords_unlike_any_option() -> None:
    store = ThreadStore("passthrough://", tls=True, timeout=3)
    assert store.options.extra == {"tls": True, "timeout": 3}


def test_a_correct_option_is_not_an_extra() -> None:
    store = ThreadStore("memory://", namespace="core_private", pool_size=2)
    assert store.options.namespace == "core_private"
    assert store.options.extra == {}


@pytest.mark.parametrize("url", [*NO_EXTRAS, *SQL_SERVERS, *DRIVER_EXTRAS])
@pytest.mark.parametrize(
    ("typo", "meant"), [("namepsace", "namespace"), ("tranactions", "transactions")]
)
def test_a_misspelt_option_in_the_url_query_is_refused(url: str, typo: str, meant: str) -> None:
    if url in DRIVER_EXTRAS:
        pytest.importorskip(DRIVER_EXTRAS[url][0])
    joined = f"{url}{'&' if '?' in url else '?'}{typo}=private"
    with pytest.raises(
        ValueError, match=f"unknown store URL parameter '{typo}'; did you mean '{meant}'"
    ):
        ThreadStore(joined)


def test_driver_parameters_in_the_url_query_still_reach_the_driver() -> None:
    store = ThreadStore("mongodb://127.0.0.1:1/?connectTimeoutMS=3000&namespace=mine")
    assert store.options.namespace == "mine"
    assert "connectTimeoutMS=3000" in store.backend._url  # type: ignore[attr-defined]
