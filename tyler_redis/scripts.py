"""The Lua scripts of the Redis backend, and the layout of the keys they touch.

The scripts live in :mod:`tyler_redis.thread_scripts` (the keys of one thread) and
:mod:`tyler_redis.index_scripts` (the index keys, and the one-step save and append);
:class:`Script` and :func:`run`, how one is run, in :mod:`tyler_redis.lua`. This module
re-exports them all (``scripts.WRITE``, ``scripts.run``, ...) with :data:`SCRIPTS`, every script,
and :data:`TOKEN_LENGTH`.

Each thread-level script touches only the keys of one thread (they share a hash tag, so one slot
on a cluster) and runs atomically: a script ran whole or not at all, whatever happens to the
connection. The index scripts touch only the namespace's index keys (which share the hash tag
``{namespace}``, so one slot too). On a standalone server a save or an append is one script that
touches both (:data:`WRITE_AND_INDEX`, :data:`APPEND_AND_INDEX`): the thread half and the index
half of the cluster's scripts, as Lua functions both call.

Layout of one thread (``<tag>`` is ``<namespace>:t:{<escaped thread id>}``):

* ``<tag>:h`` hash, the header: ``v`` version, ``u`` updated_at (ISO text), ``d`` the thread's
  own fields as JSON, ``n`` its incarnation token (absent on threads stored before tokens
  existed), ``lm`` its current member of the list index, ``am`` its current member of the
  lookup sets, ``ix`` the lookup sets it is in (JSON), ``pl``/``pa``/``px`` the same three of
  the state the last write replaced (so a retried write can still remove them; ``pa`` and
  ``px`` are empty when the write kept its lookup members), ``ttl``
  milliseconds it was last written with, ``la`` the first sequence of its last append.
* ``<tag>:m`` hash, message id -> message JSON (without its sequence).
* ``<tag>:q`` hash, message id -> sequence, 20 digits zero-padded.
* ``<tag>:s`` sorted set (all scores 0, ordered by bytes) of ``<sequence><message id>``: the
  highest sequence without reading the messages, and never a rounding of 64-bit integers
  through Lua's doubles.

The index keys (``<index>`` is ``<namespace>:{<namespace>}``):

* ``<index>:l`` sorted set (scores 0, by bytes) of list members, ``<20 digits of updated_at
  micros><id>NUL<token>``; read backwards it is the list order.
* ``<index>:i`` hash, thread id -> the list members it has, each as its 20 digits and its
  token (48 bytes): every member of one thread without a scan.
* ``<index>:p`` hash, thread id -> the tokens (28 bytes each) of the saves, appends and
  deletes of it that have begun and not finished: the only threads whose members a reader
  must check against the header. A finished operation removes its token; one that crashed
  leaves it for readers to clear once the thread's members agree with its header again.
* ``<index>:e`` sorted set, thread id -> a time (ms, this node's clock) at or before which a
  thread with a ttl expires: threads due within a margin are checked too.
* ``<index>:v`` string, present once the index keeps ``i``/``p``/``e`` (an index written by an
  older release is upgraded by the first reader).
* one set per attribute or source value, of members ``<id>NUL<token>``.

A token is stamped by the index node's clock (``TIME``): ten digits of seconds, six of
microseconds, twelve random hex digits (the client's, so a retried one-step script, which
stamps again, still recognises its own write). A header names the members of its committed state.
Every thread without a pending token has exactly one list member, the one its header names
(unless it is due to expire): that is what lets a reader take a page by rank.
"""

from __future__ import annotations

from tyler_redis.index_scripts import (
    APPEND_AND_INDEX,
    INDEX_ADD,
    INDEX_LIST,
    INDEX_SETTLE,
    INDEX_SWEEP,
    INDEX_TIDY,
    INDEX_UPGRADE,
    WRITE_AND_INDEX,
)
from tyler_redis.lua import Script, run
from tyler_redis.thread_scripts import APPEND, DELETE, READ, WRITE

__all__ = [
    "APPEND",
    "APPEND_AND_INDEX",
    "DELETE",
    "INDEX_ADD",
    "INDEX_LIST",
    "INDEX_SETTLE",
    "INDEX_SWEEP",
    "INDEX_TIDY",
    "INDEX_UPGRADE",
    "READ",
    "SCRIPTS",
    "TOKEN_LENGTH",
    "WRITE",
    "WRITE_AND_INDEX",
    "Script",
    "run",
]

#: Length of the token at the end of every index member.
TOKEN_LENGTH = 28


SCRIPTS = (
    WRITE,
    APPEND,
    WRITE_AND_INDEX,
    APPEND_AND_INDEX,
    READ,
    DELETE,
    INDEX_ADD,
    INDEX_SETTLE,
    INDEX_LIST,
    INDEX_TIDY,
    INDEX_UPGRADE,
    INDEX_SWEEP,
)
