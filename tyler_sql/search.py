"""Full-text search over message content, with each dialect's own engine.

Every message row carries ``search_words``: the distinct lowercase words of its text, computed
here the way the memory backend splits words. Each dialect indexes that column with its engine
(PostgreSQL ``to_tsvector('simple', ...)`` under a GIN index, SQLite FTS5, MariaDB ``FULLTEXT``)
and a query asks for messages holding every word. Indexing the word set instead of the content
keeps the index small and sidesteps PostgreSQL's 1 MB limit on a ``tsvector``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Table,
    TextClause,
    and_,
    func,
    literal,
    literal_column,
    select,
    text,
)

from tyler_core.models import Message

__all__ = [
    "content_words",
    "create_search_ddl",
    "drop_search_ddl",
    "matching_messages",
    "search_words",
]

_WORD = re.compile(r"\w+")
# bytes.translate's table: each ASCII byte that is not a word character (\w) made a space (the
# upper half is never used: only ASCII text is translated).
_ASCII_WORDS = bytes(
    [c if chr(c).isalnum() or chr(c) == "_" else 0x20 for c in range(128)] + [0x20] * 128
)
# No engine indexes longer words (PostgreSQL stops at 2047 bytes, MariaDB at 84 characters).
_LONGEST_WORD = 80


def search_words(message: Message) -> str | None:
    """The distinct lowercase words of a message's text, space-separated (``None``: none)."""
    return content_words(message.content)


def content_words(content: Any) -> str | None:
    """:func:`search_words` of a message's ``content`` (text or a list of content parts)."""
    if isinstance(content, list):
        content = " ".join(str(p.get("text", "")) for p in content if p.get("type") == "text")
    if not isinstance(content, str) or not content:
        return None
    lowered = content.lower()
    if lowered.isascii():
        # The same words without the regular expression, several times faster: an ASCII \w is
        # a letter, a digit or "_", so the runs left between the other characters once those
        # are made spaces are the \w+ runs; bytes sort as their code points do.
        found = set(lowered.encode("ascii").translate(_ASCII_WORDS).split())
        if len(lowered) > _LONGEST_WORD and max(map(len, found), default=0) > _LONGEST_WORD:
            found = {w for w in found if len(w) <= _LONGEST_WORD}
        return b" ".join(sorted(found)).decode("ascii") or None
    words = {w for w in _WORD.findall(lowered) if len(w) <= _LONGEST_WORD}
    return " ".join(sorted(words)) or None


def fts_table(namespace: str) -> str:
    return f"{namespace}_search"


def create_search_ddl(namespace: str, dialect: str) -> list[str]:
    """The statements that create the full-text index over ``{namespace}_messages``."""
    messages = f"{namespace}_messages"
    index = f"ix_{namespace}_search"
    if dialect == "postgresql":
        return [
            f"CREATE INDEX {index} ON {messages} USING gin "
            f"(to_tsvector('simple'::regconfig, coalesce(search_words, '')))"
        ]
    if dialect in ("mysql", "mariadb"):
        # Built without stopwords ("about", "this" ...), so that every word can be found.
        return [
            "SET @tyler_stopwords = @@SESSION.innodb_ft_enable_stopword",
            "SET SESSION innodb_ft_enable_stopword = OFF",
            f"CREATE FULLTEXT INDEX {index} ON {messages} (search_words)",
            "SET SESSION innodb_ft_enable_stopword = @tyler_stopwords",
        ]
    fts = fts_table(namespace)
    # An external-content FTS5 table over the messages' words, kept in step by triggers (the
    # documented recipe); its rowid is messages.pk.
    return [
        f"CREATE VIRTUAL TABLE {fts} USING fts5(search_words, content='{messages}', "
        "content_rowid='pk', tokenize='unicode61 remove_diacritics 0')",
        f"CREATE TRIGGER {fts}_ai AFTER INSERT ON {messages} BEGIN "
        f"INSERT INTO {fts}(rowid, search_words) VALUES (new.pk, new.search_words); END",
        f"CREATE TRIGGER {fts}_ad AFTER DELETE ON {messages} BEGIN "
        f"INSERT INTO {fts}({fts}, rowid, search_words) "
        "VALUES ('delete', old.pk, old.search_words); END",
        f"CREATE TRIGGER {fts}_au AFTER UPDATE ON {messages} BEGIN "
        f"INSERT INTO {fts}({fts}, rowid, search_words) "
        "VALUES ('delete', old.pk, old.search_words); "
        f"INSERT INTO {fts}(rowid, search_words) VALUES (new.pk, new.search_words); END",
        f"INSERT INTO {fts}({fts}) VALUES ('rebuild')",
    ]


def drop_search_ddl(namespace: str, dialect: str) -> list[str]:
    """The statements that remove what :func:`create_search_ddl` created."""
    index = f"ix_{namespace}_search"
    if dialect == "postgresql":
        return [f"DROP INDEX {index}"]
    if dialect in ("mysql", "mariadb"):
        return [f"DROP INDEX {index} ON {namespace}_messages"]
    fts = fts_table(namespace)
    return [f"DROP TRIGGER {fts}_{kind}" for kind in ("ai", "ad", "au")] + [f"DROP TABLE {fts}"]


def _has_word(column: ColumnElement[str], word: str, dialect: str) -> ColumnElement[bool]:
    # Exactly this word among the stored ones (binary comparison on every dialect): engines
    # split, fold or skip words differently, this check makes the answer the same everywhere.
    padded = literal(" ") + column + literal(" ")
    needle = literal(f" {word} ")
    if dialect == "postgresql":
        return func.strpos(padded, needle) > 0
    if dialect in ("mysql", "mariadb"):
        return func.locate(needle, padded) > 0
    return func.instr(padded, needle) > 0


def matching_messages(
    messages: Table,
    namespace: str,
    dialect: str,
    words: Sequence[str],
    *,
    min_token: int = 1,
) -> ColumnElement[bool]:
    """A condition on ``messages``: the message holds every one of ``words`` (lowercase).

    The dialect's full-text engine narrows the candidates; an exact check of each word on the
    stored word list decides. ``min_token`` is the shortest word the engine indexes (MariaDB's
    ``innodb_ft_min_token_size``): shorter words are checked without the engine.
    """
    column = messages.c.search_words
    exact = [_has_word(column, word, dialect) for word in words]
    # Words are \w+ runs, so quoting them as phrases keeps every engine's syntax out of them.
    engine: ColumnElement[bool] | TextClause | None = None
    if dialect == "postgresql":
        engine = text(
            "to_tsvector('simple'::regconfig, coalesce(search_words, '')) "
            "@@ plainto_tsquery('simple'::regconfig, :tyler_query)"
        ).bindparams(tyler_query=" ".join(words))
    elif dialect in ("mysql", "mariadb"):
        indexed = [w for w in words if len(w) >= min_token]
        if indexed:
            engine = text(
                f"MATCH ({messages.name}.search_words) AGAINST (:tyler_query IN BOOLEAN MODE)"
            ).bindparams(tyler_query=" ".join(f'+"{w}"' for w in indexed))
    else:
        fts = fts_table(namespace)
        query = " ".join(f'"{w}"' for w in words)
        rowids: Any = (
            select(literal_column("rowid"))
            .select_from(text(fts))
            .where(text(f"{fts} MATCH :tyler_query").bindparams(tyler_query=query))
        )
        engine = messages.c.pk.in_(rowids)
    return and_(*([engine] if engine is not None else []), *exact)
