"""Reading pages of threads: the statements that load them and the decoding of their rows.

A page is one statement: the page's threads (a subquery with their conditions, order, limit and
offset), each joined to its messages. Each thread's rows start with one that carries its JSON
document alone, the database's work done once per thread; each of its messages follows on a row
of its own. The JSON documents the database put together (:mod:`tyler_sql.documents`) go to
pydantic directly (``model_validate_json`` with :data:`~tyler_core.models.TRUSTED`), a thread's
messages spliced into its own document, one call per thread, without a ``json.loads`` and a dict
per column first. One statement sees one snapshot, so most reads need no transaction of their
own.

On SQLite and MariaDB, :attr:`PageReader.by_id` is the thread's row, then its messages, in one
``UNION ALL`` whose parts each read an index in order: no sort of the whole page in a temporary
table (1,000 messages on MariaDB: 3.8 ms instead of 5.4; SQLite 2.3 instead of 3.9). SQL does not
promise that a ``UNION ALL`` returns its parts in order, so its rows carry the sequence, and
rows that come back in another order are sorted.

On MariaDB a lookup's page (``list``, ``list_recent``, ``find_by_*``) is not sorted by the server
either, which copied its documents into a temporary table to sort them: its rows come in any
order, each with its keys (the thread's id; its ``updated_at`` as text, or the message's
sequence), and are put in order here (:meth:`PageReader._keyed_page`, :func:`_keyed_threads`).

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
from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Integer,
    Select,
    String,
    and_,
    bindparam,
    case,
    cast,
    literal_column,
    null,
    select,
    true,
    type_coerce,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tyler_core.models import (
    TRUSTED,
    Attachment,
    Message,
    Thread,
    decode_trusted_messages,
    set_incarnation,
)
from tyler_sql.documents import message_document, thread_document
from tyler_sql.driverfetch import DriverFetch
from tyler_sql.schema import Tables

__all__ = ["PageReader"]

_MYSQL = ("mysql", "mariadb")
# Ids per IN (...) list: far below every driver's limit on bound parameters.
_CHUNK = 500
# Message documents decoded in one call.
_SLICE = 256
# A LIMIT that keeps every row (MariaDB and SQLite take an unsigned or signed 64-bit one).
_ALL_ROWS = 2**63 - 1

_Row = Sequence[Any]  # a result row
_ATTACHMENTS: TypeAdapter[list[Attachment]] = TypeAdapter(list[Attachment])


def _text(value: str | None) -> str:
    return "null" if value is None else encode_basestring(value)


def _chunks(items: Sequence[str]) -> list[Sequence[str]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


class PageReader:
    """The read statements of one namespace and the decoding of what they return."""

    def __init__(self, tables: Tables, dialect: str, fetch: DriverFetch | None = None) -> None:
        self._tables = t = tables
        self._dialect = dialect
        self._fetch = fetch
        threads, files, reactions = t.threads, t.files, t.reactions
        self._head_columns = list(threads.c)
        #: The page of the thread ``:b_thread_id``.
        self.by_id = (
            self._with_messages(
                select(*self._head_columns).where(threads.c.id == bindparam("b_thread_id"))
            )
            if dialect == "postgresql"
            else self._one_thread()
        )
        self._lookups: dict[tuple[int, bool, bool, bool], Select[Any]] = {}
        # The statements whose rows come in no promised order, each with its keys (MariaDB's
        # lookups: see _keyed_page).
        self._keyed: set[Select[Any]] = set()
        file_columns = [
            files.c.thread_id,
            files.c.message_id,
            files.c.filename,
            files.c.mime_type,
            files.c.file_id,
            files.c.storage_path,
            files.c.storage_backend,
            files.c.status,
            files.c.size,
            type_coerce(files.c.attributes, String()),  # the stored JSON text, not decoded
        ]
        reaction_columns = [
            reactions.c.thread_id,
            reactions.c.message_id,
            reactions.c.emoji,
            reactions.c.user_id,
        ]
        # The attachments and reactions of a list of threads (an expanding IN), in order.
        self._children = [
            select(*columns)
            .where(table.c.thread_id.in_(bindparam("b_thread_ids", expanding=True)))
            .order_by(table.c.thread_id, table.c.message_id, table.c.position)
            for table, columns in ((files, file_columns), (reactions, reaction_columns))
        ]

    def _heads(
        self, conditions: Sequence[ColumnElement[bool]], limit: Any, offset: Any
    ) -> Select[Any]:
        # The threads that meet ``conditions``, newest first, past ``offset`` rows (``None``:
        # none), at most ``limit`` (``None``: all); each a number or a bind parameter.
        threads = self._tables.threads
        order = (threads.c.updated_at.desc(), threads.c.id.desc())
        if offset is None:
            heads = select(*self._head_columns).where(*conditions).order_by(*order)
            return heads if limit is None else heads.limit(limit)
        # The rows an offset skips are read in the index on (updated_at, id) alone, and only
        # the page's own rows from the table (MariaDB at offset 5,000 of 10,000: 1 ms, not 16).
        skipped = select(threads.c.id).where(*conditions).order_by(*order).offset(offset)
        if limit is not None:
            skipped = skipped.limit(limit)
        ids = skipped.subquery("page_ids")
        return select(*self._head_columns).join_from(threads, ids, threads.c.id == ids.c.id)

    def _with_messages(self, heads: Select[Any], *, keyed: bool = False) -> Select[Any]:
        # The page's threads as a subquery, each taken twice: part 0 is the row of its
        # document and incarnation, part 1 joins its messages in sequence order (one row per
        # message, or one empty row for a thread without any). The document is built and sent
        # once per thread, not with each message. ``keyed``: in no order, each row with the
        # keys that order it instead (see _keyed_page).
        messages = self._tables.messages
        page = heads.subquery("page")
        zero: ColumnElement[int] = literal_column("0", Integer())
        one: ColumnElement[int] = literal_column("1", Integer())
        parts = union_all(select(zero.label("part")), select(one.label("part"))).subquery("parts")
        rows = select(
            message_document(messages, self._dialect),
            messages.c.attachment_count,
            messages.c.reaction_count,
            messages.c.sequence,
        )
        found: Any
        joined: Any
        if self._dialect == "postgresql":
            # LATERAL, kept apart by OFFSET 0 (or the planner flattens it into a plain join):
            # an index scan of each thread's messages, whatever the planner's estimates (on
            # fresh tables they can favour hashing every message of the namespace).
            found = (
                rows.where(messages.c.thread_id == page.c.id, parts.c.part == one)
                .offset(0)
                .lateral("found")
            )
            joined = page.join(parts, true()).outerjoin(found, true())
        else:
            found = rows.add_columns(messages.c.thread_id).subquery("found")
            joined = page.join(parts, true()).outerjoin(
                found, and_(parts.c.part == one, found.c.thread_id == page.c.id)
            )
        head = parts.c.part == zero
        columns = [
            case((head, thread_document(page.c, self._dialect))),
            case((head, page.c.incarnation)),
            found.c.document,
            found.c.attachment_count,
            found.c.reaction_count,
        ]
        if keyed:
            columns += [page.c.id, case((head, _recency(page.c))), found.c.sequence]
            return select(*columns).select_from(joined)
        return (
            select(*columns)
            .select_from(joined)
            .order_by(page.c.updated_at.desc(), page.c.id.desc(), parts.c.part, found.c.sequence)
        )

    def _keyed_page(
        self, conditions: Sequence[ColumnElement[bool]], limit: Any, offset: Any
    ) -> Select[Any]:
        # MariaDB: a page whose rows come in no order, each with its keys: the thread's id and,
        # on its head, the text of its updated_at (each fixed-width: in order as text), or, on
        # a message, the sequence. _keyed_threads puts them in order. Without an offset, the
        # page's threads and their messages are one UNION ALL, each part joined to the page's
        # ids (read in the (updated_at, id) index alone) and read in its table's index: no sort
        # of the page's documents in a temporary table (list_recent(20) of 10,000 threads of 5
        # messages: the statement takes half the time; the call 1.7 times the raw driver's
        # instead of 2.3). With an offset, where each of those joins would skip the offset's
        # rows again (MariaDB reads such a subquery once per reference, as a CTE too), the
        # page's joined statement, without its ORDER BY (offset 5,000: 10% less).
        if offset is not None:
            statement = self._with_messages(self._heads(conditions, limit, offset), keyed=True)
        else:
            statement = self._union_page(conditions, limit)
        self._keyed.add(statement)
        return statement

    def _union_page(self, conditions: Sequence[ColumnElement[bool]], limit: Any) -> Select[Any]:
        threads, messages = self._tables.threads, self._tables.messages

        def page_ids() -> Any:
            ids = select(threads.c.id).where(*conditions)
            if limit is not None:  # without a limit, the order is _keyed_threads' alone
                ids = ids.order_by(threads.c.updated_at.desc(), threads.c.id.desc()).limit(limit)
            return ids.subquery("page_ids")

        shown = page_ids()
        heads = select(
            thread_document(threads.c, self._dialect),
            threads.c.incarnation,
            null().cast(String()).label("document"),
            null().cast(Integer()).label("attachment_count"),
            null().cast(Integer()).label("reaction_count"),
            threads.c.id,
            _recency(threads.c).label("recency"),
            null().cast(Integer()).label("sequence"),
        ).join_from(threads, shown, threads.c.id == shown.c.id)
        theirs = page_ids()
        found = select(
            null().cast(String()).label("head"),
            null().cast(String()).label("incarnation"),
            message_document(messages, self._dialect),
            messages.c.attachment_count,
            messages.c.reaction_count,
            messages.c.thread_id,
            null().cast(String()).label("recency"),
            messages.c.sequence,
        ).join_from(theirs, messages, messages.c.thread_id == theirs.c.id)
        return union_all(heads, found)  # type: ignore[return-value]

    def _one_thread(self) -> Select[Any]:
        # SQLite and MariaDB: the thread's row, then its messages, one UNION ALL, each part
        # read in its index (no sort: MariaDB sorted a 1,000-message page in a temporary table,
        # 1.4 ms of 5.4). The rows come in that order, but SQL does not promise it: a sixth
        # column, the sequence, lets _in_order check it and sort if need be.
        threads, messages = self._tables.threads, self._tables.messages
        thread_id: BindParameter[str] = bindparam("b_thread_id")
        head = select(
            thread_document(threads.c, self._dialect),
            threads.c.incarnation,
            null().cast(String()).label("document"),
            null().cast(Integer()).label("attachment_count"),
            null().cast(Integer()).label("reaction_count"),
            null().cast(Integer()).label("sequence"),
        ).where(threads.c.id == thread_id)
        found = (
            select(
                null().cast(String()).label("head"),
                null().cast(String()).label("incarnation"),
                message_document(messages, self._dialect),
                messages.c.attachment_count,
                messages.c.reaction_count,
                messages.c.sequence,
            )
            .where(messages.c.thread_id == thread_id)
            .order_by(messages.c.sequence)
        )
        if self._dialect == "sqlite":
            # SQLite takes no ORDER BY in a part of a UNION, but keeps a subquery's order.
            rows = found.subquery("found")
            return union_all(head, select(*rows.c))  # type: ignore[return-value]
        # MariaDB: "(SELECT ... ORDER BY ... LIMIT ...)", read in the (thread_id, sequence)
        # index. Without the LIMIT it drops the ORDER BY; as a derived table it would copy
        # the rows into a temporary table first.
        return union_all(head, found.limit(_ALL_ROWS))  # type: ignore[return-value]

    def page(
        self, conditions: Sequence[ColumnElement[bool]], limit: int | None, offset: int
    ) -> Select[Any]:
        """The page of the threads that meet ``conditions``, newest first, from ``offset``, at
        most ``limit``: a statement built for this call (:meth:`lookup` keeps its own)."""
        return self._with_messages(self._heads(conditions, limit, offset or None))

    def lookup(
        self,
        digests: Sequence[str],
        limit: int | None,
        offset: int,
        *,
        kind: str | None = None,
    ) -> tuple[Select[Any], dict[str, Any]]:
        """The page of the threads that have a ``thread_keys`` row of each of ``digests`` (all
        threads without digests), and its parameters: one statement per shape, built once.

        ``kind`` (the rows' kind, which their digests imply) tells PostgreSQL the digests are
        selective: on tables without statistics yet, it takes one equality for 0.5% of the
        rows and may hash every thread instead of following the digest index, where two make
        it the few rows a digest finds (measured at 100,000 threads: 0.15 ms instead of 29 ms).
        Without ``kind``, a digest that matches most threads (a source's name alone) lets it
        walk the threads newest first and stop at the page's end instead.
        """
        shape = (len(digests), kind is not None, limit is not None, offset > 0)
        statement = self._lookups.get(shape)
        if statement is None:
            keys = self._tables.keys
            kinds = [keys.c.kind == bindparam("b_kind")] if kind is not None else []
            conditions = [
                self._tables.threads.c.id.in_(
                    select(keys.c.thread_id).where(
                        keys.c.digest == bindparam(f"b_digest{i}"), *kinds
                    )
                )
                for i in range(len(digests))
            ]
            limited = None if limit is None else bindparam("b_limit", type_=Integer())
            skipped = bindparam("b_offset", type_=Integer()) if offset else None
            if self._dialect in _MYSQL:
                statement = self._keyed_page(conditions, limited, skipped)
            else:
                statement = self._with_messages(self._heads(conditions, limited, skipped))
            self._lookups[shape] = statement
        parameters: dict[str, Any] = {f"b_digest{i}": d for i, d in enumerate(digests)}
        if kind is not None:
            parameters["b_kind"] = kind
        if limit is not None:
            parameters["b_limit"] = limit
        if offset:
            parameters["b_offset"] = offset
        return statement, parameters

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


def _recency(columns: Any) -> ColumnElement[str]:
    # A thread's updated_at as MariaDB's text of a DATETIME(6): fixed-width, so that text
    # order is time order.
    return cast(columns.updated_at, String())


# Each thread of a page: its document, its incarnation, its messages' documents and, for those
# with attachments or reactions, (index, attachment_count, reaction_count).
_Found = list[tuple[str, str | None, list[str], list[tuple[int, int, int]]]]
_by_recency = itemgetter(6, 5)
_by_sequence = itemgetter(7)


def _keyed_threads(rows: Sequence[_Row]) -> _Found:
    # The threads of a keyed page's rows (see PageReader._keyed_page), in any order: heads
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
