"""Store options: from keywords, then the URL query, then ``TYLER_*`` variables, then defaults.

The facade strips its own query parameters (:data:`FACADE_PARAMETERS`) from the URL before the
backend sees it, because drivers reject parameters they do not know.

Other keywords are ``StoreOptions.extra``: a backend that passes them to its driver (Redis,
MongoDB) lets the driver judge them, one that takes none calls :func:`refuse_extra_options`. A
keyword that looks like a misspelt option of ours is refused for every backend, since a
``namepsace=`` silently dropped puts data in the default namespace.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

from tyler_core.errors import BackendNotFoundError
from tyler_core.urls import mask_url

__all__ = [
    "FACADE_PARAMETERS",
    "MAX_TTL",
    "StoreOptions",
    "refuse_extra_options",
    "resolve_options",
    "strip_facade_parameters",
]

FACADE_PARAMETERS = (
    "namespace",
    "ttl",
    "connect_timeout",
    "pool_size",
    "max_overflow",
    "pool_timeout",
    "pool_recycle",
    "transactions",
)

# Only the pool settings have environment variables: a namespace or TTL is part of what a store
# *is*, not of how a deployment runs it.
_ENVIRONMENT = {
    "pool_size": "TYLER_DB_POOL_SIZE",
    "max_overflow": "TYLER_DB_MAX_OVERFLOW",
    "pool_timeout": "TYLER_DB_POOL_TIMEOUT",
    "pool_recycle": "TYLER_DB_POOL_RECYCLE",
}

_NAMESPACE = re.compile(r"[a-z0-9_]{1,32}")


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreOptions:
    """The resolved options a backend receives in :meth:`StorageBackend.from_url`.

    Attributes:
        namespace: isolates stores sharing a server (table, key or collection prefix).
        ttl: default time-to-live in seconds for saved threads (``ttl`` capability), or ``None``.
        connect_timeout: seconds within which opening must succeed or fail.
        pool_size, max_overflow, pool_timeout, pool_recycle: connection pool settings; ``None``
            leaves the driver's default.
        transactions: ``auto``, ``on`` or ``off`` (backends that have a choice, such as Mongo).
        extra: keyword options the facade does not know, passed through to the backend.
    """

    namespace: str = "tyler"
    ttl: float | None = None
    connect_timeout: float = 10.0
    pool_size: int | None = None
    max_overflow: int | None = None
    pool_timeout: float | None = None
    pool_recycle: float | None = None
    transactions: Literal["auto", "on", "off"] = "auto"
    extra: Mapping[str, Any] = field(default_factory=dict)


#: The longest ttl, in seconds (100 years of 365 days): a longer one would overflow what some
#: servers store an expiry in (Redis: milliseconds since the epoch in an int64), after the
#: thread was written. For no expiry, give no ttl.
MAX_TTL = 100 * 365 * 86_400


def _positive_number(name: str, raw: Any, *, integer: bool, allow_zero: bool) -> int | float:
    try:
        value: int | float = int(raw) if integer else float(raw)
    except (TypeError, ValueError):
        kind = "an integer" if integer else "a number"
        raise ValueError(f"option {name!r} must be {kind}, not {raw!r}") from None
    if value < 0 or (value == 0 and not allow_zero) or value != value or value == float("inf"):
        raise ValueError(f"option {name!r} must be a positive number, not {raw!r}")
    return value


def _convert(name: str, raw: Any) -> Any:
    if name == "namespace":
        if not isinstance(raw, str) or not _NAMESPACE.fullmatch(raw):
            raise ValueError(f"namespace must be 1 to 32 characters of [a-z0-9_], not {raw!r}")
        return raw
    if name == "transactions":
        if raw not in ("auto", "on", "off"):
            raise ValueError(f"option 'transactions' must be auto, on or off, not {raw!r}")
        return raw
    if name in ("pool_size",):
        return _positive_number(name, raw, integer=True, allow_zero=False)
    if name == "max_overflow":
        return _positive_number(name, raw, integer=True, allow_zero=True)
    value = _positive_number(name, raw, integer=False, allow_zero=False)
    if name == "ttl" and value > MAX_TTL:
        raise ValueError(
            f"option 'ttl' must be at most {MAX_TTL:,} seconds (100 years), not {raw!r}"
        )
    return value


#: How alike (difflib ratio, case-sensitive) a keyword must be to one of ours to be taken for a
#: typo of it even by a backend that passes keywords on: ``namepsace`` and ``pool_sise`` are,
#: drivers' own ``connectTimeoutMS`` (0.84) and ``socket_connect_timeout`` (0.81) are not.
_TYPO_CUTOFF = 0.85


def _unknown_option(name: str, cutoff: float) -> str | None:
    """``name``'s "did you mean" suffix when it is that close to an option of ours."""
    close = difflib.get_close_matches(name, FACADE_PARAMETERS, n=1, cutoff=cutoff)
    return f"; did you mean {close[0]!r}?" if close else None


def refuse_extra_options(options: StoreOptions, backend: str) -> None:
    """Refuse keywords beyond the facade's, for a backend that gives them to no driver.

    Args:
        options: the options the backend received.
        backend: how messages name the backend (``"the SQL backend"``).

    Raises:
        TypeError: naming the first unknown keyword, and the option it is close to if any.
    """
    name = next(iter(options.extra), None)
    if name is not None:
        hint = _unknown_option(name, 0.6) or ""
        raise TypeError(
            f"unknown store option {name!r}{hint} ({backend} takes only "
            f"{', '.join(FACADE_PARAMETERS)})"
        )


def strip_facade_parameters(url: str) -> tuple[str, dict[str, str]]:
    """Split the facade's own query parameters off ``url``; return the rest of the URL and them.

    Raises:
        BackendNotFoundError: the URL does not parse (an unclosed IPv6 bracket, say).
        ValueError: a query parameter looks like a misspelt one of ours (``?namepsace=``).
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise BackendNotFoundError(f"malformed store URL {mask_url(url)!r}: {exc}") from None
    if not parts.query:
        return url, {}
    ours: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in FACADE_PARAMETERS:
            ours[key] = value
            continue
        hint = _unknown_option(key, _TYPO_CUTOFF)
        if hint is not None:  # a typo would reach the driver, or nothing, in silence
            raise ValueError(f"unknown store URL parameter {key!r}{hint}")
        rest.append((key, value))
    if not ours:
        return url, {}
    # Rebuilt as text: urlunsplit drops the "//" of an empty host ("sqlite:///f.db").
    base, _, tail = url.partition("?")
    _, hash_mark, fragment = tail.partition("#")
    query = urlencode(rest)
    return base + (f"?{query}" if query else "") + (f"#{fragment}" if hash_mark else ""), ours


def resolve_options(
    keywords: Mapping[str, Any],
    query: Mapping[str, str],
    environ: Mapping[str, str] | None = None,
) -> StoreOptions:
    """Merge the sources in order of precedence: keywords, URL query, environment, defaults.

    Raises:
        ValueError: an option has a bad value.
        TypeError: a keyword that is not an option is close to one (``namepsace``).
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in keywords.items():
        if key in FACADE_PARAMETERS:
            if value is not None:
                values[key] = _convert(key, value)
        else:
            hint = _unknown_option(key, _TYPO_CUTOFF)
            if hint is not None:
                raise TypeError(f"unknown store option {key!r}{hint}")
            extra[key] = value
    for key, value in query.items():
        if key not in values:
            values[key] = _convert(key, value)
    for key, variable in _ENVIRONMENT.items():
        if key not in values and environ.get(variable):
            values[key] = _convert(key, environ[variable])
    return StoreOptions(**values, extra=extra)
