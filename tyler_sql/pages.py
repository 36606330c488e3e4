"""Reading pages of threads: running the statements of :mod:`tyler_sql.pagequeries` and
decoding their rows.

The JSON documents the database put together (:mod:`tyler_sql.documents`) go to pydantic directly
(``model_validate_json`` with :data:`~tyler_core.models.TRUSTED`), a thread's messages spliced
into its own document, one call per thread, without a ``json.loads`` and a dict per column first.
One statement sees one snapshot, so most reads need no transaction of their own. The rows of
SQLite's and MariaDB's :attr:`~tyler_sql.pagequeries.PageStatements.by_id` that come back out of
order are sorted (:func:`_in_order`); those of MariaDB's lookups, which come in any order, are
put in order here (:func:`_keyed_threads`).

Attachments and reactions live in their own tables; ``messages.attachment_count`` and
``reaction_count`` say whether a message has any. A page where one does needs those tables read
in the same snapshot as the messages: :meth:`PageReader.load` then answers ``None`` unless it
runs inside a snapshot transaction, where it reads them too (one query per table).

The statements are built once per namespace (per shape, for lookups). A page read on its own is
sent on a pooled connection of its own, on the driver (:meth:`PageReader.load_alone`,
:mod:`tyler_sql.driverfetch`: compiled once, plain rows back); inside a transaction, and on
psycopg, SQLAlchemy executes it (a hit in its compiled cache).
"""

from __future__ import annotations

from collections.abc import Sequence
from json.encoder import encode_basestring
from operator import itemgetter
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tyler_core.models import (
    TRUSTED,
    Attachment,
    Message,
    Thread,
    decode_trusted_messages,
    set_incarnation,
)
from tyler_sql.driverfetch import DriverFetch
from tyler_sql.pagequeries import PageStatements
from tyler_sql.schema import Tables

__all__ = ["PageReader"]

# Ids per IN (...) list: far below every driver's limit on bound parameters.
_CHUNK = 500
# Message documents decoded in one call.
_SLICE = 256

_Row = Sequence[Any]  # a result row
_ATTACHMENTS: TypeAdapter[list[Attachment]] = TypeAdapter(list[Attachment])


def _text(value: str | None) -> str:
    return "null" if value is None else encode_basestring(value)


def _chunks(items: Sequence[str]) -> list[Sequence[str]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


class PageReader(PageStatements):
    """The read statements of one namespace and the decoding of what they return."""

    def __init__(self, tables: Tables, dialect: str, fetch: DriverFetch | None = None) -> None:
        super().__init__(tables, dialect)
        self._fetch = fetch

    @property
    def fetches(self) -> bool:
        """Whether :meth:`load_alone` can be used (not on psycopg)."""
        return self._fetch is not None

    async def load_alone(
        self, engine: AsyncEngine, page: Select[Any], parameters: dict[str, Any] | None = None
    ) -> list[Thread] | None:
        """The threads of ``page``, as :meth:`load` gives them, its statement sent on a pooled
        connection of ``engine`` of its own (see :mod:`tyler_sql.driverfetch`); ``None``
        when a message of the page has attachments or reactions."""
        assert self._fetch is not None
        # The rows go to _decode alone (no reference kept here), which lets them go as it
        # decodes them: a long thread's documents do not stay beside its messages.
        return await self._decode(None, page, await self._fetch.rows(engine, page, parameters))

    async def load(
        self,
        connection: AsyncConnection,
        page: Select[Any],
        parameters: dict[str, Any] | None = None,
        *,
        snapshot: bool,
    ) -> list[Thread] | None:
        """The threads of ``page`` (from :attr:`by_id`, :meth:`page` or :meth:`lookup`), in
        its order, with their messages.

        Returns ``None`` when a message of the page has attachments or reactions and
        ``snapshot`` is false: run it again in a transaction that reads one snapshot.
        """
        # On the driver's connection only outside a transaction (see tyler_sql.driverfetch).
        if self._fetch is not None and not connection.in_transaction():
            fetched = self._fetch.rows(connection, page, parameters)
        else:
            fetched = self._all(connection, page, parameters)
        return await self._decode(connection if snapshot else None, page, await fetched)

    @staticmethod
    async def _all(
        connection: AsyncConnection, page: Select[Any], parameters: dict[str, Any] | None
    ) -> Sequence[_Row]:
        rows: Sequence[_Row] = (await connection.execute(page, parameters)).all()
        return rows

    async def _decode(
        self, connection: AsyncConnection | None, page: Select[Any], rows: Sequence[_Row]
    ) -> list[Thread] | None:
        # The threads of ``rows``; their attachments and reactions read on ``connection``, in
        # the snapshot of the rows (None: there is none to read them in).
        if page in self._keyed:
            found = _keyed_threads(rows)
        else:
            found = _threads(
                _in_order(rows) if page is self.by_id and self._dialect != "postgresql" else rows
            )
        if isinstance(rows, list):
            # Emptied, so that the documents go as they are decoded: the driver may hold on to
            # the list it returned (asyncpg keeps it until the connection's next query).
            rows.clear()
        del rows
        if connection is None and any(counted for _, _, _, counted in found):
            return None
        threads: list[Thread] = []
        extras: dict[tuple[str, str], Message] = {}  # messages with attachments or reactions
        with_files: set[str] = set()
        with_reactions: set[str] = set()
        # A thread is decoded with its messages spliced into its document, a long one's
        # messages in slices of them: one pydantic call per thread or slice instead of one per
        # message (1,000 messages: 0.3 to 0.8 ms less). A slice's documents go once decoded.
        for head, token, documents, counted in found:
            if 0 < len(documents) <= _SLICE:
                head = f'{head[:-1]},"messages":[{",".join(documents)}]}}'
                documents.clear()
            thread = Thread.model_validate_json(head, context=TRUSTED)
            # As a thread whose messages were appended after it was built would have it.
            thread.__pydantic_fields_set__.discard("messages")
            while documents:
                thread.messages += decode_trusted_messages(f"[{','.join(documents[:_SLICE])}]")
                del documents[:_SLICE]
            threads.append(set_incarnation(thread, token))
            for index, attachment_count, reaction_count in counted:
                message = thread.messages[index]
                extras[thread.id, message.id] = message
                if attachment_count:
                    with_files.add(thread.id)
                if reaction_count:
                    with_reactions.add(thread.id)
        if with_files:
            assert connection is not None
            files = await self._children_of(connection, 0, sorted(with_files))
            for key, attachments in _attachments(files).items():
                if key in extras:
                    extras[key].attachments = _ATTACHMENTS.validate_json(
                        "[" + ",".join(attachments) + "]", context=TRUSTED
                    )
        if with_reactions:
            assert connection is not None
            reactions = await self._children_of(connection, 1, sorted(with_reactions))
            for key, reacted in _reactions(reactions).items():
                if key in extras:
                    extras[key].reactions = reacted
        return threads

    async def _children_of(
        self, connection: AsyncConnection, which: int, ids: Sequence[str]
    ) -> list[_Row]:
        found: list[_Row] = []
        for chunk in _chunks(ids):
            result = await connection.execute(self._children[which], {"b_thread_ids": list(chunk)})
            found.extend(result.all())
        return found


def _in_order(rows: Sequence[_Row]) -> Sequence[_Row]:
    # The rows of _one_thread (the sequence sixth) in the order of _with_messages: the
    # thread's first, then its messages in sequence order.
    ordered = True
    last = None
    for index, row in enumerate(rows):
        sequence = row[5]
        if index == 0:
            ordered = row[0] is not None
        elif sequence is None or (last is not None and sequence <= last):
            ordered = False
            break
        last = sequence
    if ordered:
        return rows
    return sorted(rows, key=lambda row: -1 if row[5] is None else row[5])


# Each thread of a page: its document, its incarnation, its messages' documents and, for those
# with attachments or reactions, (index, attachment_count, reaction_count).
_Found = list[tuple[str, str | None, list[str], list[tuple[int, int, int]]]]
_by_recency = itemgetter(6, 5)
_by_sequence = itemgetter(7)


def _keyed_threads(rows: Sequence[_Row]) -> _Found:
    # The threads of a keyed page's rows (see PageStatements._keyed_page), in any order: heads
    # (the document first) with their thread's id sixth and recency seventh, messages (the
    # document third) with their thread's id sixth and sequence eighth.
    heads: list[_Row] = []
    messages: dict[str, list[_Row]] = {}
    for row in rows:
        if row[0] is not None:
            heads.append(row)
        elif row[2] is not None:
            theirs = messages.get(row[5])
            if theirs is None:
                messages[row[5]] = [row]
            else:
                theirs.append(row)
    heads.sort(key=_by_recency, reverse=True)  # newest first, then the greater id
    threads: _Found = []
    for head in heads:
        mine = messages.get(head[5], [])
        last = None
        for row in mine:
            if last is not None and row[7] <= last:
                mine.sort(key=_by_sequence)
                break
            last = row[7]
        documents = [row[2] for row in mine]
        counted = [(i, row[3], row[4]) for i, row in enumerate(mine) if row[3] or row[4]]
        threads.append((head[0], head[1], documents, counted))
    return threads


def _threads(rows: Sequence[_Row]) -> _Found:
    # Each thread of a page's rows (its first row is its head; its messages follow, or one
    # empty row): its document, its incarnation, its messages' documents and, for those with
    # attachments or reactions, (index, attachment_count, reaction_count).
    threads = []
    documents: list[str] = []
    counted: list[tuple[int, int, int]] = []
    for row in rows:  # five columns, or six (_one_thread's)
        head = row[0]
        if head is not None:
            documents = []
            counted = []
            threads.append((head, row[1], documents, counted))
        document = row[2]
        if document is None:
            continue
        if row[3] or row[4]:  # attachments or reactions
            counted.append((len(documents), row[3], row[4]))
        documents.append(document)
    return threads


def _attachments(rows: Sequence[_Row]) -> dict[tuple[str, str], list[str]]:
    found: dict[tuple[str, str], list[str]] = {}
    for (
        thread_id,
        message_id,
        filename,
        mime,
        file_id,
        path,
        backend,
        status,
        size,
        attributes,
    ) in rows:
        found.setdefault((thread_id, message_id), []).append(
            f'{{"filename":{encode_basestring(filename)},"mime_type":{_text(mime)},'
            f'"file_id":{_text(file_id)},"storage_path":{_text(path)},'
            f'"storage_backend":{_text(backend)},"status":"{status}",'
            f'"size":{"null" if size is None else int(size)},"attributes":{attributes}}}'
        )
    return found


def _reactions(rows: Sequence[_Row]) -> dict[tuple[str, str], dict[str, list[str]]]:
    found: dict[tuple[str, str], dict[str, list[str]]] = {}
    for thread_id, message_id, emoji, user_id in rows:
        found.setdefault((thread_id, message_id), {}).setdefault(emoji, []).append(user_id)
    return found
