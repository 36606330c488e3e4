"""What every backend can hold, and the canonical JSON form used for equality in lookups.

The limits are the intersection of what PostgreSQL, MariaDB, SQLite, Redis and MongoDB store
without loss: JSON values only, finite floats, integers in signed 64 bits, strings without NUL or
lone surrogates, nesting of at most :data:`MAX_DEPTH` levels.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = [
    "MAX_DEPTH",
    "canonical_json",
    "check_json_value",
    "check_text",
    "json_equal",
]

MAX_DEPTH = 32
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")


def check_text(value: str, what: str = "string") -> str:
    """Refuse NUL characters and lone surrogates, which no backend stores intact."""
    if value.isascii() and "\x00" not in value:  # ASCII (a flag, no scan): no surrogates
        return value
    match = _BAD_CHARS.search(value)
    if match is not None:
        char = match.group()
        kind = "a NUL character" if char == "\x00" else f"a lone surrogate (U+{ord(char):04X})"
        raise ValueError(f"{what} contains {kind} at position {match.start()}")
    return value


def check_json_value(value: Any, what: str = "value", _depth: int = 1) -> Any:
    """Check that ``value`` is a JSON value every backend can store; return it unchanged.

    Raises:
        ValueError: on NaN or infinities, integers outside signed 64 bits, strings with NUL
            or lone surrogates, nesting deeper than :data:`MAX_DEPTH`, or any non-JSON type.
    """
    kind = type(value)
    if kind is dict or kind is list:
        if _depth > MAX_DEPTH:
            raise ValueError(f"{what} is nested deeper than {MAX_DEPTH} levels")
        if kind is dict:
            for key in value:
                if type(key) is not str:
                    raise ValueError(f"{what} has a non-string key {key!r}")
                if not key.isascii() or "\x00" in key:
                    check_text(key, f"a key of {what}")
            items = value.values()
        else:
            items = value
        # Strings, None and booleans, the most common items, are checked here without a call.
        for item in items:
            item_kind = type(item)
            if item_kind is str:
                if not item.isascii() or "\x00" in item:
                    check_text(item, what)
            elif item is not None and item_kind is not bool:
                check_json_value(item, what, _depth + 1)
        return value
    if kind is str:
        return check_text(value, what)
    if value is None or kind is bool:
        return value
    if kind is int:
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError(f"{what} holds an integer outside signed 64 bits: {value}")
        return value
    if kind is float:
        if not math.isfinite(value):
            raise ValueError(f"{what} holds {value!r}, which is not a JSON number")
        return value
    raise ValueError(f"{what} holds a {kind.__name__}, which is not a JSON value")


def _canonical(value: Any) -> Any:
    if type(value) is float and value.is_integer() and abs(value) < 2**64:
        # Numbers compare by value: 1.0 and 1 have one canonical form.
        return int(value)
    if type(value) is dict:
        return {key: _canonical(item) for key, item in value.items()}
    if type(value) is list:
        return [_canonical(item) for item in value]
    return value


# Built once: json.dumps with options builds an encoder on every call.
_encode_canonical = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


def canonical_json(value: Any) -> str:
    """The canonical JSON text of a value: equal texts mean equal values under rule 7.

    Type-strict (``1 != "1"``, ``True != 1``), numbers by value (``1 == 1.0``), objects regardless
    of key order, strings exactly. Backends store and compare this text for attribute lookups.
    """
    return _encode_canonical(_canonical(value))


def json_equal(left: Any, right: Any) -> bool:
    """Whether two JSON values are equal under the lookup rules (see :func:`canonical_json`)."""
    return canonical_json(left) == canonical_json(right)
