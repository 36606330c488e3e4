"""Rows built for the SQL tables without a database: the search words, the lookup digests and
the JSON text of the fast saves equal what the plain reference computations give (stored
digests and words must never change), and the message columns are the table's."""

from __future__ import annotations

import hashlib
import json
import random
import re
from typing import Any

import pytest
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Dialect

from tyler_core.models import Message
from tyler_sql.fastwrite import json_text
from tyler_sql.rows import (
    MESSAGE_COLUMNS,
    key_digest,
    key_rows,
    message_row,
    source_digest,
    source_digests,
)
from tyler_sql.schema import JSONText, build_tables
from tyler_sql.search import content_words

# -- search words ------------------------------------------------------------------------------


def _reference_words(content: str) -> str | None:
    """The definition: distinct lowercase \\w+ runs of at most 80 characters, sorted."""
    words = {w for w in re.findall(r"\w+", content.lower()) if len(w) <= 80}
    return " ".join(sorted(words)) or None


@pytest.mark.parametrize(
    "content",
    [
        "",
        " ",
        "!?.,",
        "Hello, World! hello_world 42 x2",
        "a\tb\nc\x0bd\x0ce\x1cf\x1fg\x7fh",
        "w" * 80 + " " + "v" * 81 + " end",
        "w" * 81,
        "Ünïcode ǅ İstanbul straße ٣ Ⅻ 🎉 e\u0301",
        "mixed ascii and é",
        "x" * 79 + "İ",  # lowercasing makes it longer than 80 characters
    ],
)
def test_search_words_are_the_distinct_lowercase_words(content: str) -> None:
    assert content_words(content) == _reference_words(content)


def test_search_words_of_random_text_match_the_definition() -> None:
    rng = random.Random(7)
    alphabet = [chr(c) for c in range(1, 128)] + list("éİßǅ٣Ⅻ_ \u2028\u00a0🎉")
    for _ in range(5000):
        content = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        if rng.random() < 0.1:
            content += " " + "q" * rng.randint(78, 83)
        assert content_words(content) == _reference_words(content), repr(content)


def test_search_words_of_content_parts_take_the_text_parts() -> None:
    parts = [{"type": "text", "text": "One two"}, {"type": "image_url"}, {"type": "text"}]
    assert content_words(parts) == "one two"
    assert content_words([{"type": "image_url"}]) is None
    assert content_words(None) is None


# -- lookup digests ----------------------------------------------------------------------------


def _canonical(value: Any) -> str:
    def numbers(v: Any) -> Any:
        if type(v) is float and v.is_integer() and abs(v) < 2**64:
            return int(v)
        if isinstance(v, dict):
            return {k: numbers(i) for k, i in v.items()}
        if isinstance(v, list):
            return [numbers(i) for i in v]
        return v

    return json.dumps(numbers(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _sha(parts: list[Any]) -> str:
    encoded = json.dumps(parts, ensure_ascii=False)
    return hashlib.sha256(encoded.encode("utf-8", "surrogatepass")).hexdigest()


_VALUES: list[Any] = [
    "v",
    "",
    'é "q" \\ \u2028 \x01 🎉',
    1,
    1.0,
    -0.5,
    1e16,
    2**63 - 1,
    True,
    None,
    [1, "a", {"b": 2.0}],
    {"z": 1, "a": [None]},
    {},
]


def test_digests_are_the_sha256_of_the_json_array_of_kind_key_and_canonical_value() -> None:
    # One pinned value: existing databases hold digests computed this way.
    pinned = "4885bbb7f077ef67c0cb4291402ae766b0c49ef40c92299a150fdfa864f4cc40"
    assert key_digest("attribute", "customer", "acme") == pinned
    for value in _VALUES:
        for key in ("k", "é 🎉", 'q"uote', ""):
            expected = _sha(["attribute", key, _canonical(value)])
            assert key_digest("attribute", key, value) == expected
            for name in (None, '"slack"', '"é"'):
                expected = _sha(["source", name, key, _canonical(value)])
                assert source_digest(name, key, value) == expected


def test_key_rows_hold_each_top_level_key_with_its_digest() -> None:
    attributes = {"s": "v", "n": 1.0, "o": {"b": [1], "a": "é"}}
    source = {"channel": "C1", "name": "slack", "ts": 2.5}
    rows = key_rows("t", attributes, source)
    expected = [
        ("attribute", key, _sha(["attribute", key, _canonical(value)]), _canonical(value))
        for key, value in attributes.items()
    ] + [
        (
            "source",
            key,
            _sha(["source", key, _canonical(value)])
            if key == "name"
            else _sha(["source", _canonical("slack"), key, _canonical(value)]),
            _canonical(value),
        )
        for key, value in source.items()
    ]
    assert [(r["kind"], r["key"], r["digest"], r["value"]) for r in rows] == expected
    assert {r["thread_id"] for r in rows} == {"t"}
    nameless = key_rows("t", {}, {"channel": "C1"})
    assert nameless[0]["digest"] == _sha(["source", None, "channel", '"C1"'])
    assert key_rows("t", {}, None) == key_rows("t", {}, {}) == []
    assert source_digests("slack", {"channel": "C1"}) == [rows[3]["digest"]]


# -- JSON text and message rows ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["postgresql", "mysql", "sqlite"])
def test_json_text_is_what_the_column_type_binds(name: str) -> None:
    dialect: Dialect = {"postgresql": postgresql, "mysql": mysql, "sqlite": sqlite}[name].dialect()
    bind = JSONText().dialect_impl(dialect).bind_processor(dialect)
    assert bind is not None
    for value in [*_VALUES, [], {"a": {}}, [{}], {"nested": {"x": [1e-7, 1e300, -0.0]}}]:
        assert json_text(value) == bind(value), value
        if value is not None:
            assert json_text(value) == json.dumps(
                value, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            )


def test_json_text_refuses_what_the_column_type_refuses() -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        json_text({"x": float("nan")})


def test_message_columns_are_the_tables_and_a_row_holds_them() -> None:
    messages = build_tables("ns").messages
    assert [c.name for c in messages.c] == ["pk", "thread_id", *MESSAGE_COLUMNS]
    message = Message(
        role="user", content="Hi there", sequence=3, reactions={"👍": ["a", "b"], "🎉": ["c"]}
    )
    row = message_row("t", message)
    assert set(row) == {"thread_id", *MESSAGE_COLUMNS}
    assert row["thread_id"] == "t"
    assert row["id"] == message.id
    assert row["sequence"] == 3
    assert row["search_words"] == "hi there"
    assert (row["attachment_count"], row["reaction_count"]) == (0, 3)
