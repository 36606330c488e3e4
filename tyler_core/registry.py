"""Which backend serves a URL: exact scheme lookup over entry points and run-time registrations.

Backends register under the entry-point group ``tyler.thread_stores``. An entry's name is a URL
scheme with ``+`` written as ``.`` (``postgresql.asyncpg``); its value is either a
:class:`BackendSpec` (preferred: its module imports no driver) or a
:class:`~tyler_core.backend.StorageBackend` subclass. :func:`register_backend` adds one at run
time and wins over entry points. Entry points are read on the first lookup and cached;
:func:`refresh` reads them again. Lookup is exact: ``postgresql+psycopg`` never falls back to
another driver. An entry whose name is no scheme in that form (``mydb+async``) is ignored, with a
warning that says how to name it.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import re
import warnings
from dataclasses import dataclass
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

from tyler_core.errors import AmbiguousBackendError, BackendNotFoundError, MissingDependencyError
from tyler_core.urls import TYLER_NAMES, mask_url, scheme_of

if TYPE_CHECKING:
    from tyler_core.backend import StorageBackend

__all__ = [
    "ENTRY_POINT_GROUP",
    "BackendInfo",
    "BackendSpec",
    "available_backends",
    "normalize_url",
    "refresh",
    "register_backend",
    "resolve_backend",
    "unregister_backend",
]

ENTRY_POINT_GROUP = "tyler.thread_stores"
DISTRIBUTION = "tyler-threadstore"
_SCHEME = re.compile(r"[a-z][a-z0-9+.\-]*")
_ENTRY_POINT_NAME = re.compile(r"[a-z][a-z0-9.\-]*")


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendSpec:
    """A lazy description of a backend, cheap to import.

    Attributes:
        target: ``"module:Class"`` of the :class:`StorageBackend` subclass.
        requires: modules the backend needs (its drivers), checked before ``target`` is imported.
        install: the pip requirement that provides them, e.g. ``tyler-threadstore[mongo]``.
        driver: a short name of the driver, for messages (``asyncpg``).
    """

    target: str
    requires: tuple[str, ...] = ()
    install: str | None = None
    driver: str | None = None

    def missing_modules(self) -> list[str]:
        """The required modules that cannot be imported here."""
        missing = []
        for module in self.requires:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                missing.append(module)
        return missing


@dataclass(frozen=True, slots=True)
class BackendInfo:
    """One registered scheme, as :func:`available_backends` reports it."""

    scheme: str
    target: str
    provider: str
    install: str | None
    installed: bool
    missing: tuple[str, ...]


_runtime: dict[str, BackendSpec | type[StorageBackend]] = {}


def _key(scheme: str) -> str:
    return scheme.lower().replace("+", ".")


def _scheme(key: str) -> str:
    return key.replace(".", "+")


def register_backend(scheme: str, backend: str | BackendSpec | type[StorageBackend]) -> None:
    """Serve ``scheme`` with ``backend`` in this process, over any entry point.

    Args:
        scheme: the URL scheme, e.g. ``"mydb"`` or ``"mydb+driver"``.
        backend: a :class:`StorageBackend` subclass, a :class:`BackendSpec`, or a
            ``"module:Class"`` string.

    Raises:
        ValueError: ``scheme`` is not a URL scheme.
        TypeError: ``backend`` is none of those, or a string (or a spec's target) that is not
            ``"module:Class"``.
    """
    from tyler_core.backend import StorageBackend

    if not _SCHEME.fullmatch(scheme.lower()):
        raise ValueError(f"not a URL scheme: {scheme!r}")
    if isinstance(backend, str):
        backend = BackendSpec(target=backend)
    if isinstance(backend, BackendSpec):
        _check_target(backend.target)
    elif not (isinstance(backend, type) and issubclass(backend, StorageBackend)):
        raise TypeError(
            "register_backend() takes a StorageBackend subclass, a BackendSpec or a "
            f"'module:Class' string, not {backend!r}"
        )
    _runtime[_key(scheme)] = backend


def _check_target(target: object) -> None:
    """Refuse a target that cannot name a class, at registration rather than at first use."""
    module, colon, attribute = target.partition(":") if isinstance(target, str) else ("", "", "")
    names = module.split(".") if module else []
    if not (colon and attribute.isidentifier() and names and all(n.isidentifier() for n in names)):
        raise TypeError(f"a backend target is 'module:Class', not {target!r}")


def unregister_backend(scheme: str) -> None:
    """Remove a run-time registration; entry points for the scheme apply again."""
    _runtime.pop(_key(scheme), None)


@cache
def _entry_points() -> dict[str, list[EntryPoint]]:
    found: dict[str, list[EntryPoint]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if not _ENTRY_POINT_NAME.fullmatch(ep.name.lower()):
            _warn_bad_name(ep)
            continue
        claims = found.setdefault(ep.name.lower(), [])
        if not any(c.value == ep.value for c in claims):
            claims.append(ep)
    return found


def _warn_bad_name(ep: EntryPoint) -> None:
    how = (
        f"write '+' as '.' ({ep.name.replace('+', '.')!r})"
        if "+" in ep.name
        else "name it after a URL scheme (letters, digits, '.' and '-')"
    )
    warnings.warn(
        f"ignoring the {ENTRY_POINT_GROUP} entry point {ep.name!r} of {_provider(ep)}: {how}",
        UserWarning,
        stacklevel=4,
    )


def refresh() -> None:
    """Read the entry points again (after installing a package at run time)."""
    _entry_points.cache_clear()


def _provider(ep: EntryPoint) -> str:
    return ep.dist.name if ep.dist is not None else ep.value


def _load(ep: EntryPoint) -> BackendSpec | type[StorageBackend]:
    from tyler_core.backend import StorageBackend

    try:
        loaded = ep.load()
    except ImportError as exc:
        raise MissingDependencyError(
            f"the {_scheme(ep.name)!r} backend from {_provider(ep)} cannot be imported: {exc}"
        ) from exc
    if isinstance(loaded, BackendSpec):
        return loaded
    if isinstance(loaded, type) and issubclass(loaded, StorageBackend):
        return loaded
    raise BackendNotFoundError(
        f"the entry point {ep.name} = {ep.value!r} of {_provider(ep)} is neither a BackendSpec "
        "nor a StorageBackend subclass"
    )


def _all_keys() -> list[str]:
    return sorted(set(_runtime) | set(_entry_points()))


def normalize_url(url: str | None) -> str:
    """The URL a backend is chosen by: ``memory://`` for none, Tyler's SQLite names expanded.

    Raises:
        BackendNotFoundError: the URL has no scheme and is not one of Tyler's SQLite names.
    """
    if url is None or url == "":
        return "memory://"
    if "://" in url:
        if not _SCHEME.fullmatch(scheme_of(url)):
            raise BackendNotFoundError(f"malformed store URL {mask_url(url)!r}: bad scheme")
        return url
    if url == ":memory:":
        return "sqlite+aiosqlite:///:memory:"
    if url.lower().endswith(TYLER_NAMES):
        return f"sqlite+aiosqlite:///{url}"
    raise BackendNotFoundError(
        f"malformed store URL {mask_url(url)!r}: expected SCHEME://..., ':memory:' or a path "
        "ending in .db, .sqlite or .sqlite3"
    )


def resolve_backend(url: str) -> type[StorageBackend]:
    """The backend class for a normalised URL (see :func:`normalize_url`).

    Raises:
        BackendNotFoundError: no backend serves the scheme.
        AmbiguousBackendError: two packages claim the scheme.
        MissingDependencyError: the backend's driver is not installed.
    """
    scheme = scheme_of(url)
    key = _key(scheme)
    registered = _runtime.get(key)
    if registered is None:
        claims = _entry_points().get(key, [])
        if not claims:
            raise BackendNotFoundError(_unknown_scheme_message(scheme))
        if len(claims) > 1:
            names = " and ".join(f"{_provider(ep)} ({ep.value})" for ep in claims)
            raise AmbiguousBackendError(
                f"the URL scheme {scheme!r} is registered by {names}; choose one with "
                f"tyler_core.register_backend({scheme!r}, {claims[0].value!r})"
            )
        registered = _load(claims[0])
    return _backend_class(scheme, registered)


def _backend_class(
    scheme: str, registered: BackendSpec | type[StorageBackend]
) -> type[StorageBackend]:
    from tyler_core.backend import StorageBackend

    if not isinstance(registered, BackendSpec):
        return registered
    missing = registered.missing_modules()
    if missing:
        raise MissingDependencyError(_missing_message(scheme, registered, missing))
    module_name, _, attribute = registered.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise MissingDependencyError(
            _missing_message(scheme, registered, [exc.name or str(exc)])
        ) from exc
    backend = getattr(module, attribute, None)
    if not (isinstance(backend, type) and issubclass(backend, StorageBackend)):
        raise BackendNotFoundError(
            f"{registered.target!r}, registered for {scheme!r}, is not a StorageBackend subclass"
        )
    return backend


def _missing_message(scheme: str, spec: BackendSpec, missing: list[str]) -> str:
    needs = ", ".join(missing)
    hint = f': pip install "{spec.install}"' if spec.install else ""
    return f"the {scheme!r} backend needs {needs}{hint}"


def _unknown_scheme_message(scheme: str) -> str:
    installed = [_scheme(k) for k in _all_keys()]
    message = f"no backend for the URL scheme {scheme!r}"
    close = difflib.get_close_matches(scheme, installed, n=3, cutoff=0.6)
    if close:
        message += f"; did you mean {' or '.join(repr(c) for c in close)}?"
    else:
        message += "."
    message += f" Installed schemes: {', '.join(installed) or 'none'}."
    return message + _family_hint(scheme)


def _family_hint(scheme: str) -> str:
    """For a scheme of one of our databases: the drivers we serve it with, or the extra to
    install when the package that registers them is missing (an older wheel)."""
    extra = _KNOWN_EXTRAS.get(_key(scheme).split(".")[0])
    if extra is None:
        return ""
    family = [k for k in _all_keys() if _KNOWN_EXTRAS.get(k.split(".")[0]) == extra]
    if not family:
        return f' Install it with: pip install "tyler-threadstore[{extra}]"'
    drivers = sorted({d for d in map(_driver_of, family) if d})
    served = f"with {' and '.join(drivers)} only" if drivers else "only"
    return f" This database is served {served}, as: {', '.join(map(_scheme, family))}."


def _driver_of(key: str) -> str | None:
    registered = _runtime.get(key)
    if registered is None:
        claims = _entry_points().get(key, [])
        try:
            registered = _load(claims[0]) if len(claims) == 1 else None
        except (MissingDependencyError, BackendNotFoundError):
            return None
    return registered.driver if isinstance(registered, BackendSpec) else None


# Schemes our own extras provide, for the hint when the package providing them is not installed
# (an older wheel, say). The entry points remain the source of truth for what is installed.
_KNOWN_EXTRAS = {
    "sqlite": "sqlite",
    "postgresql": "postgres",
    "postgres": "postgres",
    "mysql": "mysql",
    "mariadb": "mysql",
    "redis": "redis",
    "rediss": "redis",
    "mongodb": "mongo",
}


def available_backends() -> list[BackendInfo]:
    """Every registered scheme, whether its driver imports, and what to install if not."""
    infos = []
    for key in _all_keys():
        scheme = _scheme(key)
        registered = _runtime.get(key)
        provider = "register_backend()"
        if registered is None:
            claims = _entry_points()[key]
            provider = " and ".join(_provider(ep) for ep in claims)
            try:
                registered = _load(claims[0])
            except (MissingDependencyError, BackendNotFoundError):
                infos.append(BackendInfo(scheme, claims[0].value, provider, None, False, ()))
                continue
        if isinstance(registered, BackendSpec):
            missing = tuple(registered.missing_modules())
            infos.append(
                BackendInfo(
                    scheme, registered.target, provider, registered.install, not missing, missing
                )
            )
        else:
            target = f"{registered.__module__}:{registered.__qualname__}"
            infos.append(BackendInfo(scheme, target, provider, None, True, ()))
    return infos
