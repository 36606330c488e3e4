"""The facade's argument checks for pages, thread ids and attribute/source filters: misuse
raises ``TypeError`` or ``ValueError`` before any backend is called."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, overload

from tyler_core.jsonvalues import INT64_MAX, check_json_value, check_text

__all__ = ["check_filter", "check_page", "check_thread_id"]


@overload
def check_page(limit: int, offset: int, *, limit_required: bool = ...) -> tuple[int, int]: ...
@overload
def check_page(
    limit: int | None, offset: int, *, limit_required: bool = ...
) -> tuple[int | None, int]: ...
def check_page(
    limit: int | None, offset: int, *, limit_required: bool = False
) -> tuple[int | None, int]:
    """The page's ``limit`` and ``offset``, checked, and capped at the largest int64: a page
    that large is every thread (``limit=sys.maxsize`` is the usual way to ask for them), and
    databases refuse bigger numbers."""
    if limit is None:
        if limit_required:
            raise TypeError("limit must be an int")
    elif not isinstance(limit, int) or isinstance(limit, bool):
        raise TypeError(f"limit must be an int or None, not {type(limit).__name__}")
    elif limit < 0:
        raise ValueError(f"limit must be non-negative, not {limit}")
    if not isinstance(offset, int) or isinstance(offset, bool):
        raise TypeError(f"offset must be an int, not {type(offset).__name__}")
    if offset < 0:
        raise ValueError(f"offset must be non-negative, not {offset}")
    return (None if limit is None else min(limit, INT64_MAX)), min(offset, INT64_MAX)


def check_thread_id(thread_id: str) -> str:
    if not isinstance(thread_id, str):
        raise TypeError(f"a thread id is a str, not {type(thread_id).__name__}")
    if not 1 <= len(thread_id) <= 255:
        raise ValueError(f"a thread id has 1 to 255 characters, not {len(thread_id)}")
    return check_text(thread_id, "the thread id")


def check_filter(values: Mapping[str, Any], what: str) -> dict[str, Any]:
    if not isinstance(values, Mapping):
        raise TypeError(f"{what} must be a mapping, not {type(values).__name__}")
    checked = dict(values)
    check_json_value(checked, what)
    return checked
