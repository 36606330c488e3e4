"""The statements that read pages of threads, built once per namespace (per shape, for lookups).

A page is one statement: the page's threads (a subquery with their conditions, order, limit and
offset), each joined to its messages. Each thread's rows start with one that carries its JSON
document alone, the database's work done once per thread; each of its messages follows on a row
of its own (the documents: :mod:`tyler_sql.documents`). :class:`~tyler_sql.pages.PageReader`
runs them and decodes their rows.

On SQLite and MariaDB, :attr:`PageStatements.by_id` is the thread's row, then its messages, in one
``UNION ALL`` whose parts each read an index in order: no sort of the whole page in a temporary
table (1,000 messages on MariaDB: 3.8 ms instead of 5.4; SQLite 2.3 instead of 3.9). SQL does not
promise that a ``UNION ALL`` returns its parts in order, so its rows carry the sequence, and
rows that come back in another order are sorted.

On MariaDB a lookup's page (``list``, ``list_recent``, ``find_by_*``) is not sorted by the server
either, which copied its documents into a temporary table to sort them: its rows come in any
order, each with its keys (the thread's id; its ``updated_at`` as text, or the message's
sequence), and are put in order by the reader (:meth:`PageStatements._keyed_page`,
:func:`tyler_sql.pages._keyed_threads`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    BindParameter,
    ColumnElement,
    Integer,
    Select,
    String,
    and_,
    bindparam,
    case,
    cast,
    literal,
    literal_column,
    null,
    select,
    true,
    type_coerce,
    union_all,
)

from tyler_sql.documents import message_document, thread_document
from tyler_sql.schema import Tables

__all__ = ["PageStatements"]

_MYSQL = ("mysql", "mariadb")
# A LIMIT that keeps every row (MariaDB and SQLite take an unsigned or signed 64-bit one).
_ALL_ROWS = 2**63 - 1


class PageStatements:
    """The read statements of one namespace (:class:`~tyler_sql.pages.PageReader` runs them)."""

    def __init__(self, tables: Tables, dialect: str) -> None:
        self._tables = t = tables
        self._dialect = dialect
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
        return self._with_messages(
            self._heads(
                conditions,
                None if limit is None else literal(limit, BigInteger()),
                literal(offset, BigInteger()) if offset else None,
            )
        )

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
            # BIGINT: asyncpg casts an Integer parameter to int4, and a limit of sys.maxsize
            # (every thread) is common.
            limited = None if limit is None else bindparam("b_limit", type_=BigInteger())
            skipped = bindparam("b_offset", type_=BigInteger()) if offset else None
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


def _recency(columns: Any) -> ColumnElement[str]:
    # A thread's updated_at as MariaDB's text of a DATETIME(6): fixed-width, so that text
    # order is time order.
    return cast(columns.updated_at, String())
