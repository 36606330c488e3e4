"""The data model: :class:`Thread`, :class:`Message` and :class:`Attachment` (pydantic v2).

The models check everything a backend cannot store (see :mod:`tyler_core.jsonvalues`) when they
are built, and the store checks the parts that changed again when it saves, so an in-place edit
that breaks a limit is refused before anything is written.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from operator import attrgetter
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.config import ExtraValues
from pydantic_core import SchemaValidator
from typing_extensions import override

from tyler_core.decoding import trusted_list_validator, trusted_validator
from tyler_core.jsonvalues import INT64_MAX, check_json_value, check_text

__all__ = [
    "TRUSTED",
    "Attachment",
    "Message",
    "Role",
    "Thread",
    "decode_trusted_messages",
    "new_incarnation",
    "set_incarnation",
    "to_utc",
    "utc_now",
]

#: Validation context for data this library validated when it was written: backends pass it to
#: ``model_validate``/``model_validate_json`` when they read their own rows back, which skips
#: the value checks (JSON limits, id lengths, NUL characters) and the invariants a write checked
#: (a tool message's call id; unique ids and sequences, no message without one), but not
#: pydantic's type parsing.
#: Every validator here that takes the validation info returns its value unchanged for trusted
#: data: trusted validation of the models below leaves those out (:mod:`tyler_core.decoding`).
TRUSTED: dict[str, Any] = {"tyler_trusted": True}


def _trusted_context(context: Any) -> bool:
    return context is not None and context.get("tyler_trusted") is True


def _trusted(info: ValidationInfo) -> bool:
    return _trusted_context(info.context)


Role = Literal["system", "user", "assistant", "tool"]


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def to_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is taken as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _check_id(value: str, info: ValidationInfo) -> str:
    if _trusted(info):
        return value
    if not 1 <= len(value) <= 255:
        raise ValueError(f"an id must have 1 to 255 characters, not {len(value)}")
    return check_text(value, "the id")


def _check_json(value: Any, info: ValidationInfo) -> Any:
    if _trusted(info):
        return value
    return check_json_value(value, "the value")


def _check_optional_text(value: str | None, info: ValidationInfo) -> str | None:
    if value is None or _trusted(info):
        return value
    return check_text(value)


UTCDateTime = Annotated[datetime, AfterValidator(to_utc)]
Id = Annotated[str, AfterValidator(_check_id)]
JSONObject = Annotated[dict[str, Any], AfterValidator(_check_json)]
Text = Annotated[str | None, AfterValidator(_check_optional_text)]
Sequence = Annotated[int, Field(ge=0, le=INT64_MAX)]
_SEQUENCE = attrgetter("sequence")


def _new_id() -> str:
    return str(uuid.uuid4())


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=False)

    # Trusted data of Message and Thread (not of subclasses: their validators are not ours) goes
    # through a validator without the checks that would return at once: pydantic would still
    # make a Python call for each of them, several per message (see tyler_core.decoding).

    @override
    @classmethod
    def model_validate(
        cls,
        obj: Any,
        *,
        strict: bool | None = None,
        extra: ExtraValues | None = None,
        from_attributes: bool | None = None,
        context: Any | None = None,
        by_alias: bool | None = None,
        by_name: bool | None = None,
    ) -> Self:
        trusted = _TRUSTED_VALIDATORS.get(cls) if _trusted_context(context) else None
        if trusted is None:
            return super().model_validate(
                obj,
                strict=strict,
                extra=extra,
                from_attributes=from_attributes,
                context=context,
                by_alias=by_alias,
                by_name=by_name,
            )
        model: Self = trusted.validate_python(
            obj,
            strict=strict,
            extra=extra,
            from_attributes=from_attributes,
            context=context,
            by_alias=by_alias,
            by_name=by_name,
        )
        return model

    @override
    @classmethod
    def model_validate_json(
        cls,
        json_data: str | bytes | bytearray,
        *,
        strict: bool | None = None,
        extra: ExtraValues | None = None,
        context: Any | None = None,
        by_alias: bool | None = None,
        by_name: bool | None = None,
    ) -> Self:
        trusted = _TRUSTED_VALIDATORS.get(cls) if _trusted_context(context) else None
        if trusted is None:
            return super().model_validate_json(
                json_data,
                strict=strict,
                extra=extra,
                context=context,
                by_alias=by_alias,
                by_name=by_name,
            )
        model: Self = trusted.validate_json(
            json_data,
            strict=strict,
            extra=extra,
            context=context,
            by_alias=by_alias,
            by_name=by_name,
        )
        return model


class Attachment(_Model):
    """Metadata of a file attached to a message. The file's bytes are not the store's business."""

    filename: Annotated[str, AfterValidator(_check_optional_text)]
    mime_type: Text = None
    file_id: Text = None
    storage_path: Text = None
    storage_backend: Text = None
    status: Literal["pending", "stored", "failed"] = "pending"
    size: Annotated[int, Field(ge=0, le=INT64_MAX)] | None = None
    attributes: JSONObject = Field(default_factory=dict)


class Message(_Model):
    """One message of a thread.

    ``content`` is text or a list of content parts (``{"type": "text", "text": ...}``,
    ``{"type": "image_url", "image_url": {...}}``). A ``tool`` message needs ``tool_call_id``.
    ``reactions`` maps an emoji to the ids of the users who reacted, in the order they reacted.
    ``sequence`` is assigned by :meth:`Thread.add_message` (or by the store when it is ``None``).
    """

    id: Id = Field(default_factory=_new_id)
    role: Role
    sequence: Sequence | None = None
    content: str | list[dict[str, Any]] | None = None
    name: Text = None
    tool_call_id: Text = None
    tool_calls: list[dict[str, Any]] | None = None
    attributes: JSONObject = Field(default_factory=dict)
    timestamp: UTCDateTime = Field(default_factory=utc_now)
    source: JSONObject | None = None
    attachments: list[Attachment] = Field(default_factory=list)
    metrics: JSONObject = Field(default_factory=dict)
    reactions: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("content", "tool_calls")
    @classmethod
    def _json_content(cls, value: Any, info: ValidationInfo) -> Any:
        if _trusted(info):
            return value
        return check_json_value(value, "the content")

    @field_validator("reactions")
    @classmethod
    def _check_reactions(
        cls, value: dict[str, list[str]], info: ValidationInfo
    ) -> dict[str, list[str]]:
        if _trusted(info):
            return value
        for emoji, users in value.items():
            check_text(emoji, "an emoji")
            for user in users:
                check_text(user, "a user id")
        return value

    @model_validator(mode="after")
    def _tool_needs_call_id(self, info: ValidationInfo) -> Self:
        if _trusted(info):
            return self
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a message with role 'tool' needs a tool_call_id")
        return self


class Thread(_Model):
    """A conversation: messages plus attributes and the external source it came from.

    ``version`` counts the saves of the stored thread (0 for a thread never saved); the store uses
    it to refuse a save built from a stale copy. :attr:`incarnation` tells a stored thread from
    another one stored later under the same id after a delete (it is not a field: it takes no
    part in equality, dumps or exports).
    """

    id: Id = Field(default_factory=_new_id)
    title: Text = "Untitled Thread"
    messages: list[Message] = Field(default_factory=list)
    created_at: UTCDateTime = Field(default_factory=utc_now)
    updated_at: UTCDateTime = Field(default_factory=utc_now)
    attributes: JSONObject = Field(default_factory=dict)
    source: JSONObject | None = None
    version: Annotated[int, Field(ge=0, le=INT64_MAX)] = 0

    _incarnation: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check_messages(self, info: ValidationInfo) -> Self:
        if _trusted(info):  # stored messages: sequenced and unique when they were written
            return self
        assign_sequences(self.messages)
        check_unique(self.messages)
        return self

    def __eq__(self, other: object) -> bool:
        # Fields only: the incarnation token is the store's business, not the thread's content.
        if not isinstance(other, BaseModel):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    @property
    def incarnation(self) -> str | None:
        """The opaque token of the stored thread this object was loaded from or saved as.

        A store gives a thread a new token when it first stores it, so a thread deleted and
        stored again under the same id has another one, and a stale object of the first cannot
        be saved into the second even when their versions agree. ``None`` for a thread never
        stored, or read from a backend that keeps no token. Copies (``model_copy``) keep it.
        """
        return self._incarnation

    # Tyler's methods -------------------------------------------------------------------------

    def add_message(self, message: Message) -> None:
        """Add a message: a system message goes first with sequence 0, any other message gets
        the highest sequence + 1."""
        if message.role == "system":
            message.sequence = 0
            self.messages.insert(0, message)
        else:
            message.sequence = _highest_sequence(self.messages) + 1
            self.messages.append(message)
        self._touch()

    def get_message_by_id(self, message_id: str) -> Message | None:
        """The message with this id, or ``None``."""
        return next((m for m in self.messages if m.id == message_id), None)

    def get_messages_in_sequence(self) -> list[Message]:
        """The messages ordered by sequence (system messages first)."""
        return sorted(self.messages, key=lambda m: (m.role != "system", m.sequence or 0))

    def get_last_message_by_role(self, role: Role) -> Message | None:
        """The last message with this role, or ``None``."""
        return next((m for m in reversed(self.messages) if m.role == role), None)

    def clear_messages(self) -> None:
        """Remove every message."""
        self.messages.clear()
        self._touch()

    def add_reaction(self, message_id: str, emoji: str, user_id: str) -> bool:
        """Record ``user_id``'s reaction; ``False`` if the message is missing or already has it."""
        message = self.get_message_by_id(message_id)
        if message is None:
            return False
        users = message.reactions.setdefault(check_text(emoji), [])
        if user_id in users:
            return False
        users.append(check_text(user_id))
        self._touch()
        return True

    def remove_reaction(self, message_id: str, emoji: str, user_id: str) -> bool:
        """Remove ``user_id``'s reaction; an emoji with no users left disappears."""
        message = self.get_message_by_id(message_id)
        if message is None or user_id not in message.reactions.get(emoji, ()):
            return False
        users = message.reactions[emoji]
        users.remove(user_id)
        if not users:
            del message.reactions[emoji]
        self._touch()
        return True

    def get_reactions(self, message_id: str) -> dict[str, list[str]]:
        """A copy of the message's reactions (emoji to user ids), empty if it has none."""
        message = self.get_message_by_id(message_id)
        if message is None:
            return {}
        return {emoji: list(users) for emoji, users in message.reactions.items()}

    def _touch(self) -> None:
        now = utc_now()
        if now > self.updated_at:
            self.updated_at = now


# Not Attachment: having no model validator, it would get its own validator back (see decoding).
_TRUSTED_VALIDATORS: dict[type[_Model], SchemaValidator] = {
    model: trusted_validator(model) for model in (Message, Thread)
}


_TRUSTED_MESSAGE_LIST = trusted_list_validator(Message)


def decode_trusted_messages(documents: str | bytes) -> list[Message]:
    """The messages of a JSON array of message documents this library wrote (see
    :data:`TRUSTED`): what ``Message.model_validate_json(document, context=TRUSTED)`` gives for
    each, in one call for the whole array."""
    messages: list[Message] = _TRUSTED_MESSAGE_LIST.validate_json(documents)
    return messages


def new_incarnation() -> str:
    """A fresh incarnation token (24 hex characters)."""
    return os.urandom(12).hex()


def set_incarnation(thread: Thread, token: str | None) -> Thread:
    """Record the incarnation token a backend read with ``thread``; returns ``thread``."""
    thread._incarnation = token
    return thread


def _highest_sequence(messages: list[Message]) -> int:
    # add_message runs on every append, to threads of any length, so this is C-level where it
    # can be: the highest sequence of all messages is the answer when a non-system message
    # holds it (the last one, usually).
    try:
        highest = max(filter(None, map(_SEQUENCE, messages)), default=0)
        found = highest > 0
    except TypeError:  # a sequence that is no number: the exact form below decides
        found = False
    if found:
        if messages[-1].sequence == highest and messages[-1].role != "system":
            return highest
        holder = messages[list(map(_SEQUENCE, messages)).index(highest)]
        if holder.role != "system":
            return highest
    return max((m.sequence or 0 for m in messages if m.role != "system"), default=0)


def assign_sequences(messages: list[Message]) -> None:
    """Give each message without a sequence the next one (system messages get 0)."""
    highest = None
    for message in messages:
        if message.sequence is None:
            if message.role == "system":
                message.sequence = 0
                continue
            if highest is None:
                highest = _highest_sequence(messages)
            highest += 1
            message.sequence = highest


def check_unique(messages: list[Message]) -> None:
    """Refuse two messages with one id, or two stored (non-system) messages with one sequence."""
    ids: set[str] = set()
    sequences: set[int | None] = set()
    for message in messages:
        if message.id in ids:
            raise ValueError(f"two messages have the id {message.id!r}")
        ids.add(message.id)
        if message.role != "system":
            if message.sequence in sequences:
                raise ValueError(f"two messages have the sequence {message.sequence}")
            sequences.add(message.sequence)
