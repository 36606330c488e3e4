"""Strict clones: what a snapshot keeps of a thread's fields and of each stored message.

A clone shares the immutable leaves of what it copies (strings, datetimes, ``None``) and copies
every container, so an unchanged message compares with its clone in one C-level
``clone == message.__dict__`` that mostly checks identities. Numbers are wrapped so that they
compare type-strictly (``1``, ``1.0`` and ``True`` are equal in Python but different JSON), which
works because the clone is always the left operand, so its ``__eq__`` runs. Key order is not
compared (lookups ignore it too), and a datetime replaced by the same instant in another zone
counts as unchanged (it is stored as the same UTC value).

Clones are never modified, so they share what they can: small numbers, the empty containers, the
marker that stands for a system message (:data:`SYSTEM_ENTRY`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from copy import deepcopy
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from tyler_core.models import Message

__all__ = ["SYSTEM_ENTRY", "clone_entries", "clone_fields", "clone_message", "clone_value"]


class _Int:
    """A cloned int: equal to an int of the same value only (not to ``True`` or ``1.0``).

    Not an ``int`` subclass: comparing the value it holds costs about half as much as calling
    ``int.__eq__`` on itself, once per number of every message a save compares."""

    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return type(other) is int and other == self.value

    def __hash__(self) -> int:
        return hash(self.value)

    def __repr__(self) -> str:
        return repr(self.value)


class _Float:
    """A cloned float: equal to a float of the same value and sign only (``-0.0`` is not ``0.0``
    in JSON)."""

    __slots__ = ("value",)

    def __init__(self, value: float) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        value = self.value
        if type(other) is not float or other != value:
            return False
        return bool(value) or math.copysign(1.0, value) == math.copysign(1.0, other)

    def __hash__(self) -> int:
        return hash(self.value)

    def __repr__(self) -> str:
        return repr(self.value)


class _Bool:
    """A cloned bool (bool cannot be subclassed): equal to the same bool only, not to 1 or 0."""

    __slots__ = ("value",)

    def __init__(self, value: bool) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return other is self.value


_TRUE, _FALSE = _Bool(True), _Bool(False)
# Clones are never modified, so they can share these (counts and small numbers are common).
_SMALL_INTS = {value: _Int(value) for value in range(-16, 1024)}
_UNCOPYABLE = object()


class _Model:
    """A cloned model (an attachment): equal to a model of the same class with equal fields."""

    __slots__ = ("fields", "kind")

    def __init__(self, model: BaseModel) -> None:
        self.kind = type(model)
        self.fields = clone_fields(model.__dict__)

    def __eq__(self, other: object) -> bool:
        return type(other) is self.kind and self.fields == other.__dict__


class _Other:
    """A clone of a value of no JSON type (only a third-party backend could return one): a deep
    copy, equal to a value of the same type that compares equal to it."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        try:
            self.value = deepcopy(value)
        except Exception:  # not copyable: never equal, so the message is checked on save
            self.value = _UNCOPYABLE

    def __eq__(self, other: object) -> bool:
        value = self.value
        return value is not _UNCOPYABLE and type(other) is type(value) and bool(value == other)


class _SystemMessage:
    """Stands for a system message in a snapshot: never stored, so only its place counts."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return type(other) is dict and other.get("role") == "system"


SYSTEM_ENTRY = _SystemMessage()

# Clones are never modified, so every empty container of every clone can be the same object.
_EMPTY_DICT: dict[str, Any] = {}
_EMPTY_LIST: list[Any] = []


def clone_value(value: Any) -> Any:
    """A strict clone of a field value (see the module docstring)."""
    kind = type(value)
    if kind is str or value is None or kind is datetime:
        return value
    if kind is dict:
        return clone_fields(value) if value else _EMPTY_DICT
    if kind is list:
        return [clone_value(item) for item in value] if value else _EMPTY_LIST
    if kind is int:
        clone = _SMALL_INTS.get(value)
        return _Int(value) if clone is None else clone
    if kind is float:
        return _Float(value)
    if kind is bool:
        return _TRUE if value else _FALSE
    if isinstance(value, BaseModel):
        return _Model(value)
    return _Other(value)


# Values a clone shares with what it copies: immutable, and compared exactly by ``==``.
_LEAVES = frozenset({str, type(None), datetime})


def clone_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """A strict clone of a dict (a JSON object, or a model's ``__dict__``)."""
    clone = fields.copy()
    for key, value in fields.items():
        kind = type(value)
        if kind is int:  # the commonest non-leaf in metrics and attributes
            clone[key] = _SMALL_INTS[value] if -16 <= value < 1024 else _Int(value)
        elif kind not in _LEAVES:
            clone[key] = clone_value(value)
    return clone


# The fields of a Message that can hold a container (content is a string or a list of parts).
# Validation puts a string, None or a datetime in each of the others, and the sequence is left as
# it is. Backends return validated messages, and the store clones only those.
_CONTAINER_FIELDS = (
    "content",
    "tool_calls",
    "attributes",
    "source",
    "attachments",
    "metrics",
    "reactions",
)


def clone_message(message: Message) -> dict[str, Any]:
    """The clone of a stored message. Its ``sequence`` is the message's own int, not a strict
    one, which saves a Python-level comparison per message: saves check the type of every
    sequence in bulk instead (see :data:`_SEQUENCE_TYPES`).

    Snapshots clone every message a read returns, so a plain ``Message`` (validated: see
    :data:`_CONTAINER_FIELDS`) is cloned by looking only at the fields that can hold a container;
    a subclass may add fields of any kind."""
    fields = message.__dict__
    clone = fields.copy()
    if type(message) is not Message:
        for key, value in fields.items():
            if type(value) not in _LEAVES and key != "sequence":
                clone[key] = clone_value(value)
        return clone
    for key in _CONTAINER_FIELDS:
        value = fields[key]
        kind = type(value)
        if kind is dict:
            clone[key] = clone_fields(value) if value else _EMPTY_DICT
        elif kind is list:
            clone[key] = [clone_value(item) for item in value] if value else _EMPTY_LIST
        elif kind is not str and value is not None:
            clone[key] = clone_value(value)
    return clone


def clone_entries(messages: Sequence[Message]) -> list[Any]:
    """One snapshot entry per message, in list order: a clone, or the system-message marker."""
    return [SYSTEM_ENTRY if m.role == "system" else clone_message(m) for m in messages]
