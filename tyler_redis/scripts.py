"""The Lua scripts of the Redis backend, and how they are run.

Each thread-level script touches only the keys of one thread (they share a hash tag, so one slot
on a cluster) and runs atomically: a script ran whole or not at all, whatever happens to the
connection. The index scripts touch only the namespace's index keys (which share the hash tag
``{namespace}``, so one slot too).

Layout of one thread (``<tag>`` is ``<namespace>:t:{<escaped thread id>}``):

* ``<tag>:h`` hash, the header: ``v`` version, ``u`` updated_at (ISO text), ``d`` the thread's
  own fields as JSON, ``lm`` its current member of the list index, ``am`` its current member of
  the lookup sets, ``ix`` the lookup sets it is in (JSON), ``ttl`` milliseconds it was last
  written with, ``la`` the first sequence of its last append.
* ``<tag>:m`` hash, message id -> message JSON (without its sequence).
* ``<tag>:q`` hash, message id -> sequence, 20 digits zero-padded.
* ``<tag>:s`` sorted set (all scores 0, ordered by bytes) of ``<sequence><message id>``: the
  highest sequence without reading the messages, and never a rounding of 64-bit integers
  through Lua's doubles.

An index member ends with a token stamped by the index node's clock (``TIME``): ten digits of
seconds, six of microseconds, twelve random hex digits. A header names the members of its
committed state; every other member is either in flight (a save between its steps) or stale.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import NoScriptError

__all__ = [
    "APPEND",
    "DELETE",
    "INDEX_ADD",
    "INDEX_REMOVE",
    "INDEX_SWEEP",
    "READ",
    "SCRIPTS",
    "TOKEN_LENGTH",
    "WRITE",
    "Script",
    "run",
]

#: Length of the token at the end of every index member.
TOKEN_LENGTH = 28


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script and its SHA1 (what ``EVALSHA`` names it by)."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


async def run(client: Any, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """Run ``script`` by its SHA; load it when the server has forgotten it (restart, flush)."""
    try:
        return await client.evalsha(script.sha, len(keys), *keys, *args)
    except NoScriptError:
        # Normal once per script after a server restart or SCRIPT FLUSH, so not a warning.
        logging.getLogger("tyler_redis").debug(
            "the server had forgotten the %s script: loading it again", script.name
        )
        # EVAL runs the script and caches it on the node that owns the keys.
        return await client.eval(script.source, len(keys), *keys, *args)


# Write a thread: version check and every change in one step.
# KEYS: h m q s. ARGV: expected version ('' = no check), lm, am, ix, version, updated_at,
# header JSON, ttl ms ('' = none), full ('1'/'0'), number of removed ids, number of upserts,
# then the removed ids, then (id, 20-digit sequence, JSON) per upsert.
WRITE = Script(
    "write",
    """
local h, m, q, s = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local cur = redis.call('HMGET', h, 'v', 'lm', 'am', 'ix')
if cur[2] and cur[2] == ARGV[2] then
  -- A retry of this very write (its reply was lost): it is already applied.
  return {'ok', '', '', ''}
end
local stored = cur[1] or '0'
if ARGV[1] ~= '' and stored ~= ARGV[1] then
  return {'stale', stored}
end
local removed = tonumber(ARGV[10])
local upserts = tonumber(ARGV[11])
if ARGV[9] == '1' then
  redis.call('DEL', m, q, s)
else
  for i = 12, 11 + removed do
    local id = ARGV[i]
    local seq = redis.call('HGET', q, id)
    if seq then
      redis.call('ZREM', s, seq .. id)
      redis.call('HDEL', q, id)
      redis.call('HDEL', m, id)
    end
  end
end
local base = 12 + removed
for j = 0, upserts - 1 do
  local id, seq = ARGV[base + 3 * j], ARGV[base + 3 * j + 1]
  local old = redis.call('HGET', q, id)
  if old ~= seq then
    if old then redis.call('ZREM', s, old .. id) end
    redis.call('HSET', q, id, seq)
    redis.call('ZADD', s, 0, seq .. id)
  end
  redis.call('HSET', m, id, ARGV[base + 3 * j + 2])
end
redis.call('HSET', h, 'v', ARGV[5], 'u', ARGV[6], 'd', ARGV[7],
           'lm', ARGV[2], 'am', ARGV[3], 'ix', ARGV[4])
if ARGV[8] ~= '' then
  redis.call('HSET', h, 'ttl', ARGV[8])
  for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, ARGV[8]) end
else
  redis.call('HDEL', h, 'ttl')
  for _, key in ipairs(KEYS) do redis.call('PERSIST', key) end
end
return {'ok', cur[2] or '', cur[3] or '', cur[4] or ''}
""",
)

# Append messages server-side: sequences from the highest + 1, version + 1, expiry restarted.
# KEYS: h m q s. ARGV: lm, updated_at, n, then n ids, then n message JSONs.
APPEND = Script(
    "append",
    """
local function increment(digits)
  local out, carry = {}, 1
  for i = #digits, 1, -1 do
    local d = string.byte(digits, i) - 48 + carry
    if d == 10 then d, carry = 0, 1 else carry = 0 end
    out[i] = string.char(48 + d)
  end
  return table.concat(out)
end
local cur = redis.call('HMGET', KEYS[1], 'lm', 'ttl', 'la')
if not cur[1] then return {'missing'} end
if cur[1] == ARGV[1] then return {'ok', cur[3], ''} end
local n = tonumber(ARGV[3])
for i = 1, n do
  if redis.call('HEXISTS', KEYS[2], ARGV[3 + i]) == 1 then return {'exists', ARGV[3 + i]} end
end
local top = redis.call('ZRANGE', KEYS[4], '+', '-', 'BYLEX', 'REV', 'LIMIT', 0, 1)
local seq = '00000000000000000000'
if top[1] then seq = string.sub(top[1], 1, 20) end
local first = ''
for i = 1, n do
  seq = increment(seq)
  if i == 1 then first = seq end
  local id = ARGV[3 + i]
  redis.call('HSET', KEYS[2], id, ARGV[3 + n + i])
  redis.call('HSET', KEYS[3], id, seq)
  redis.call('ZADD', KEYS[4], 0, seq .. id)
end
redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('HSET', KEYS[1], 'u', ARGV[2], 'lm', ARGV[1], 'la', first)
if cur[2] then
  for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, cur[2]) end
end
return {'ok', first, cur[1]}
""",
)

# Read a whole thread in one step, so it never mixes two versions or half-expired keys.
# KEYS: h m q. Returns nil or {header, messages, sequences} as flat field/value lists.
READ = Script(
    "read",
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]),
        redis.call('HGETALL', KEYS[3])}
""",
)

# Delete a thread; return the index members it had ({lm, am, ix}) or nil.
DELETE = Script(
    "delete",
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local cur = redis.call('HMGET', KEYS[1], 'lm', 'am', 'ix')
redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return {cur[1] or '', cur[2] or '', cur[3] or ''}
""",
)

# Add a state's index members, stamped with this node's clock. Returns the token.
# KEYS: list zset, then the lookup sets. ARGV: lm prefix, am prefix, 12 random hex digits.
INDEX_ADD = Script(
    "index_add",
    """
local t = redis.call('TIME')
local token = t[1] .. string.format('%06d', tonumber(t[2])) .. ARGV[3]
redis.call('ZADD', KEYS[1], 0, ARGV[1] .. token)
for i = 2, #KEYS do redis.call('SADD', KEYS[i], ARGV[2] .. token) end
return token
""",
)

# Remove a state's members. KEYS: list zset, then lookup sets. ARGV: lm ('' = none), am.
INDEX_REMOVE = Script(
    "index_remove",
    """
if ARGV[1] ~= '' then redis.call('ZREM', KEYS[1], ARGV[1]) end
if ARGV[2] ~= '' then
  for i = 2, #KEYS do redis.call('SREM', KEYS[i], ARGV[2]) end
end
return 1
""",
)

# Remove members a reader found invalid, if they are older than the grace period (younger ones
# may belong to a save still between its steps). KEYS: the keys to clean. ARGV: grace seconds,
# 'z' (sorted sets) or 's' (sets), then the members.
INDEX_SWEEP = Script(
    "index_sweep",
    """
local now = tonumber(redis.call('TIME')[1])
local grace = tonumber(ARGV[1])
local removed = 0
for i = 3, #ARGV do
  local member = ARGV[i]
  local stamp = tonumber(string.sub(member, -28, -19))
  if stamp and now - stamp >= grace then
    for _, key in ipairs(KEYS) do
      if ARGV[2] == 'z' then
        removed = removed + redis.call('ZREM', key, member)
      else
        removed = removed + redis.call('SREM', key, member)
      end
    end
  end
end
return removed
""",
)

SCRIPTS = (WRITE, APPEND, READ, DELETE, INDEX_ADD, INDEX_REMOVE, INDEX_SWEEP)
