"""The Lua scripts of the Redis backend, and how they are run.

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

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import NoScriptError

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


# The thread half of a save and of an append, as Lua functions: the scripts below call them
# either alone (a cluster, where the index keys live in another slot) or together with the index
# changes (a standalone server, where one script may touch every key).
_THREAD = """
local function same_operation(stored, member)
  -- A retry of the operation that wrote `member` (its reply was lost) finds it in the header:
  -- the same place and the same random part (the time may differ: a one-step script stamps
  -- each attempt itself).
  if not stored or #stored ~= #member then return false end
  local n = #member
  return string.sub(stored, -12) == string.sub(member, -12)
    and string.sub(stored, 1, n - 28) == string.sub(member, 1, n - 28)
end
-- One command per key for many fields or members (each call from Lua costs as much as a small
-- command), in slices that stay within Lua's stack.
local function batched(command, key, items)
  for i = 1, #items, 1000 do
    redis.call(command, key, unpack(items, i, math.min(i + 999, #items)))
  end
end
local function hmget(key, fields)
  local values = {}
  for i = 1, #fields, 1000 do
    local got = redis.call('HMGET', key, unpack(fields, i, math.min(i + 999, #fields)))
    for k = 1, #got do values[i + k - 1] = got[k] end
  end
  return values
end
local function expire_all(h, m, q, s, ttl, had_ttl)
  if ttl ~= '' then
    for _, key in ipairs({h, m, q, s}) do redis.call('PEXPIRE', key, ttl) end
  elseif had_ttl then
    -- Without a ttl stored, no key of the thread has one: nothing to undo.
    redis.call('HDEL', h, 'ttl')
    for _, key in ipairs({h, m, q, s}) do redis.call('PERSIST', key) end
  end
end

-- Write a thread: version and incarnation checks and every change in one step. lm, am: its new
-- list and lookup members. ARGV from `a` on: expected version ('' = no check), expected
-- incarnation ('' = no check, else '=' .. token), incarnation to store if this write creates or
-- replaces the thread, ix, version, updated_at, header JSON ('' = unchanged), ttl ms ('' =
-- none), full ('1'/'0'), lookups ('new': store am and ix; 'same': keep the stored am when the
-- stored ix equals this one; 'keep': keep am and ix), number of removed ids, number of upserts,
-- then the removed ids, then one <20-digit sequence><id>NUL<JSON> per upsert (ids hold no NUL).
-- Returns {'ok', replaced
-- lm, replaced am ('' = none, or lookups kept), replaced ix, 'new'|'kept'|'again' (a retry of
-- a write already applied)}, {'stale', stored version} or {'other'} (another incarnation).
local function write_thread(h, m, q, s, a, lm, am)
  local cur = redis.call('HMGET', h, 'v', 'lm', 'am', 'ix', 'n', 'pl', 'pa', 'px', 'ttl')
  if same_operation(cur[2], lm) then
    return {'ok', cur[6] or '', cur[7] or '', cur[8] or '', 'again'}
  end
  local expected = ARGV[a]
  local stored = cur[1] or '0'
  if expected ~= '' and stored ~= expected then
    return {'stale', stored}
  end
  -- An update of a stored thread (a positive expected version that matched) keeps its token;
  -- a write that creates the thread or replaces it unchecked stores a new one.
  local update = expected ~= '' and expected ~= '0'
  -- A thread stored before tokens existed has none: only an object without one (which sends no
  -- expected token) may update it.
  if update and ARGV[a + 1] ~= '' and (not cur[5] or '=' .. cur[5] ~= ARGV[a + 1]) then
    return {'other'}
  end
  local full = ARGV[a + 8] == '1'
  local removed = tonumber(ARGV[a + 10])
  local upserts = tonumber(ARGV[a + 11])
  if full then
    redis.call('DEL', m, q, s)
  elseif removed > 0 then
    local ids = {}
    for i = 1, removed do ids[i] = ARGV[a + 11 + i] end
    local seqs = hmget(q, ids)
    local gone, members = {}, {}
    for k, id in ipairs(ids) do
      if seqs[k] then
        gone[#gone + 1] = id
        members[#members + 1] = seqs[k] .. id
      end
    end
    if #gone > 0 then
      batched('ZREM', s, members)
      batched('HDEL', q, gone)
      batched('HDEL', m, gone)
    end
  end
  if upserts > 0 then
    local base = a + 11 + removed
    local ids, entries, documents = {}, {}, {}
    for j = 1, upserts do
      local arg = ARGV[base + j]
      local nul = string.find(arg, '\\0', 21, true)
      entries[j] = string.sub(arg, 1, nul - 1)
      ids[j] = string.sub(arg, 21, nul - 1)
      documents[2 * j - 1], documents[2 * j] = ids[j], string.sub(arg, nul + 1)
    end
    local olds = {}
    if not full then olds = hmget(q, ids) end
    local moved, sequences, members = {}, {}, {}
    for j = 1, upserts do
      local id, seq = ids[j], string.sub(entries[j], 1, 20)
      local old = olds[j]
      if old ~= seq then
        if old then moved[#moved + 1] = old .. id end
        sequences[#sequences + 1] = id
        sequences[#sequences + 1] = seq
        members[#members + 1] = 0
        members[#members + 1] = entries[j]
      end
    end
    batched('ZREM', s, moved)
    batched('HSET', q, sequences)
    batched('ZADD', s, members)
    batched('HSET', m, documents)
  end
  local lookups = ARGV[a + 9]
  local keep = lookups == 'keep' or (lookups == 'same' and cur[3] and cur[4] == ARGV[a + 3])
  local pl, pa, px = cur[2] or '', '', ''
  local fields = {'v', ARGV[a + 4], 'u', ARGV[a + 5], 'lm', lm, 'pl', pl}
  local function put(name, value)
    fields[#fields + 1] = name
    fields[#fields + 1] = value
  end
  if not keep then
    pa, px = cur[3] or '', cur[4] or ''
    put('am', am)
    put('ix', ARGV[a + 3])
  end
  put('pa', pa)
  put('px', px)
  if ARGV[a + 6] ~= '' then put('d', ARGV[a + 6]) end
  if not update then put('n', ARGV[a + 2]) end
  if ARGV[a + 7] ~= '' then put('ttl', ARGV[a + 7]) end
  redis.call('HSET', h, unpack(fields))
  expire_all(h, m, q, s, ARGV[a + 7], cur[9])
  if keep then return {'ok', pl, pa, px, 'kept'} end
  return {'ok', pl, pa, px, 'new'}
end

local function increment(digits)
  local out, carry = {}, 1
  for i = #digits, 1, -1 do
    local d = string.byte(digits, i) - 48 + carry
    if d == 10 then d, carry = 0, 1 else carry = 0 end
    out[i] = string.char(48 + d)
  end
  return table.concat(out)
end

-- Append messages server-side: sequences from the highest + 1, version + 1, expiry restarted.
-- lm: the thread's new list member. ARGV from `a` on: updated_at, n, then one <id>NUL<JSON> per
-- message. Returns {'ok', first sequence, replaced lm, ttl ms or '', 'new'|'again'},
-- {'missing'} or {'exists', message id}.
local function append_messages(h, m, q, s, a, lm)
  local cur = redis.call('HMGET', h, 'lm', 'ttl', 'la', 'pl')
  if not cur[1] then return {'missing'} end
  if same_operation(cur[1], lm) then return {'ok', cur[3], cur[4] or '', cur[2] or '', 'again'} end
  local n = tonumber(ARGV[a + 1])
  local ids, documents = {}, {}
  for i = 1, n do
    local arg = ARGV[a + 1 + i]
    local nul = string.find(arg, '\\0', 1, true)
    ids[i] = string.sub(arg, 1, nul - 1)
    documents[2 * i - 1], documents[2 * i] = ids[i], string.sub(arg, nul + 1)
  end
  -- The sequence hash holds the same ids as the message hash, with short values.
  local taken = hmget(q, ids)
  for i = 1, n do
    if taken[i] then return {'exists', ids[i]} end
  end
  local top = redis.call('ZRANGE', s, '+', '-', 'BYLEX', 'REV', 'LIMIT', 0, 1)
  local seq = '00000000000000000000'
  if top[1] then seq = string.sub(top[1], 1, 20) end
  local first = ''
  local sequences, members = {}, {}
  for i = 1, n do
    seq = increment(seq)
    if i == 1 then first = seq end
    local id = ids[i]
    sequences[2 * i - 1], sequences[2 * i] = id, seq
    members[2 * i - 1], members[2 * i] = 0, seq .. id
  end
  batched('HSET', m, documents)
  batched('HSET', q, sequences)
  batched('ZADD', s, members)
  redis.call('HINCRBY', h, 'v', 1)
  redis.call('HSET', h, 'u', ARGV[a], 'lm', lm, 'la', first, 'pl', cur[1])
  if cur[2] then
    for _, key in ipairs({h, m, q, s}) do redis.call('PEXPIRE', key, cur[2]) end
  end
  return {'ok', first, cur[1], cur[2] or '', 'new'}
end
"""

# Step 2 of a save on a cluster. KEYS: h m q s. ARGV: lm, am, then the arguments of
# write_thread. Replies as write_thread.
WRITE = Script(
    "write",
    _THREAD
    + """
return write_thread(KEYS[1], KEYS[2], KEYS[3], KEYS[4], 3, ARGV[1], ARGV[2])
""",
)

# Step 2 of an append on a cluster. KEYS: h m q s. ARGV: lm, then the arguments of
# append_messages. Replies as append_messages.
APPEND = Script(
    "append",
    _THREAD
    + """
return append_messages(KEYS[1], KEYS[2], KEYS[3], KEYS[4], 2, ARGV[1])
""",
)

# Read a whole thread in one step, so it never mixes two versions or half-expired keys.
# KEYS: h m s. Returns nil or {{v, u, d, n}, messages as a flat id/JSON list, the sequence
# order's members: <20-digit sequence><id> in sequence order}.
READ = Script(
    "read",
    """
local header = redis.call('HMGET', KEYS[1], 'v', 'u', 'd', 'n')
if not header[1] then return false end
return {header, redis.call('HGETALL', KEYS[2]), redis.call('ZRANGE', KEYS[3], 0, -1)}
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

# Helpers of the index scripts. A "chunk list" is a string of fixed-width chunks: the members
# of one thread in <index>:i (48 bytes: 20 digits and a token) or its pending tokens in
# <index>:p (28 bytes).
_CHUNKS = """
local function find_chunk(list, chunk, width)
  for i = 1, #list, width do
    if string.sub(list, i, i + width - 1) == chunk then return i end
  end
  return nil
end
local function add_chunk(key, id, chunk, width)
  local list = redis.call('HGET', key, id) or ''
  if not find_chunk(list, chunk, width) then redis.call('HSET', key, id, list .. chunk) end
end
local function remove_chunk(key, id, chunk, width)
  local list = redis.call('HGET', key, id)
  if not list then return end
  local at = find_chunk(list, chunk, width)
  if not at then return end
  list = string.sub(list, 1, at - 1) .. string.sub(list, at + width)
  if list == '' then redis.call('HDEL', key, id) else redis.call('HSET', key, id, list) end
end
local function member_of(id, chunk)
  return string.sub(chunk, 1, 20) .. id .. string.char(0) .. string.sub(chunk, 21)
end
local function chunk_of(member)
  return string.sub(member, 1, 20) .. string.sub(member, -28)
end
local function stamp(token)
  local micros = tonumber(string.sub(token, 11, 16))
  return tonumber(string.sub(token, 1, 10)) * 1000 + math.floor(micros / 1000)
end
local function num(x)
  -- Numbers given to commands as text in full: never a float in exponent notation.
  return string.format('%.0f', x)
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# Step 3 of operations (see INDEX_SETTLE), as a function of the scripts that carry it. The
# records start at ARGV[at], their lookup sets at KEYS[k]; KEYS[1..4] are l i p e.
_SETTLE = """
local function settle(at, k, count)
  for _ = 1, count do
    local id, token, member, lookup = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
    local ttl, unsure, n = ARGV[at + 4], ARGV[at + 5], tonumber(ARGV[at + 6])
    if member ~= '' then
      redis.call('ZREM', KEYS[1], member)
      remove_chunk(KEYS[2], id, chunk_of(member), 48)
    end
    if lookup ~= '' then
      for i = k, k + n - 1 do redis.call('SREM', KEYS[i], lookup) end
    end
    if ttl ~= '' then
      -- The token was stamped before the thread script ran: a bound at or before its expiry.
      redis.call('ZADD', KEYS[4], 'LT', num(stamp(token) + tonumber(ttl)), id)
    end
    if unsure ~= '1' or not redis.call('HGET', KEYS[2], id) then
      remove_chunk(KEYS[3], id, token, 28)
    end
    at, k = at + 7, k + n
  end
end
"""

# Begin an operation on a thread: a pending token, and the entries of its new state, stamped
# with this node's clock; first, step 3 of operations that finished before it. Returns the token.
# KEYS: l i p e v, then the new lookup sets, then those of the step-3 records. ARGV: thread id,
# 20 digits of updated_at ('' = no list member: a delete), lookup-member prefix, 12 random hex
# digits, number of new lookup sets, number of step-3 records, then the records (INDEX_SETTLE).
INDEX_ADD = Script(
    "index_add",
    _CHUNKS
    + _SETTLE
    + """
local n = tonumber(ARGV[5])
settle(7, 6 + n, tonumber(ARGV[6]))
local t = redis.call('TIME')
local token = t[1] .. string.format('%06d', tonumber(t[2])) .. ARGV[4]
local id = ARGV[1]
add_chunk(KEYS[3], id, token, 28)
if ARGV[2] ~= '' then
  -- A new index starts in this format; one written by an older release waits for its upgrade.
  if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SET', KEYS[5], '1') end
  redis.call('ZADD', KEYS[1], 0, member_of(id, ARGV[2] .. token))
  add_chunk(KEYS[2], id, ARGV[2] .. token, 48)
end
for i = 6, 5 + n do redis.call('SADD', KEYS[i], ARGV[3] .. token) end
return token
""",
)

# Finish operations: per record, remove the entries of the state it replaced (or of its own
# state, if it failed), lower the thread's expiry bound, and remove its pending token.
# KEYS: l i p e, then each record's lookup sets. ARGV: number of records, then per record:
# thread id, the operation's token, list member to remove ('' = none), lookup member to remove
# ('' = none), ttl ms the thread now has ('' = none), '1' to keep the token while the thread has
# list members (the outcome is unknown: a retried script may have been applied before), and
# the number of its lookup sets.
INDEX_SETTLE = Script(
    "index_settle",
    _CHUNKS
    + _SETTLE
    + """
settle(2, 5, tonumber(ARGV[1]))
return 1
""",
)

# The index half of a one-step save or append on a standalone server: the thread now has the
# list member `lm` (`chunk` in <index>:i) instead of `old`, and expires `ttl` ms after `token`
# was stamped. KEYS[1..5] are l i p e v.
_MOVE = """
local function move_member(id, lm, chunk, old, ttl, token)
  -- A new index starts in this format; one written by an older release waits for its upgrade.
  if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SET', KEYS[5], '1') end
  redis.call('ZADD', KEYS[1], 0, lm)
  local chunks = redis.call('HGET', KEYS[2], id) or ''
  if old ~= '' and old ~= lm then
    redis.call('ZREM', KEYS[1], old)
    local at = find_chunk(chunks, chunk_of(old), 48)
    if at then chunks = string.sub(chunks, 1, at - 1) .. string.sub(chunks, at + 48) end
  end
  if not find_chunk(chunks, chunk, 48) then chunks = chunks .. chunk end
  redis.call('HSET', KEYS[2], id, chunks)
  if ttl ~= '' then
    redis.call('ZADD', KEYS[4], 'LT', num(stamp(token) + tonumber(ttl)), id)
  end
end
local function new_token(random)
  local t = redis.call('TIME')
  return t[1] .. string.format('%06d', tonumber(t[2])) .. random
end
"""

# A whole save on a standalone server, the three steps in one script (one server holds every
# key, so nothing is pending in between): step 3 of earlier operations, the version check and
# the thread write, the list member moved and the lookup members added. The lookup members of
# the replaced state are removed later, by the next index script (readers check every lookup
# hit). KEYS: l i p e v h m q s, then the new lookup sets, then those of the step-3 records.
# ARGV: list prefix (20 digits, id, NUL), lookup-member prefix, 12 random hex digits, number of
# new lookup sets, thread id, the arguments of write_thread (from ARGV[6]), then the number of
# step-3 records and the records (INDEX_SETTLE). Replies as write_thread.
WRITE_AND_INDEX = Script(
    "write_and_index",
    _CHUNKS
    + _SETTLE
    + _THREAD
    + _MOVE
    + """
local n = tonumber(ARGV[4])
local after = 18 + tonumber(ARGV[16]) + tonumber(ARGV[17])
settle(after + 1, 10 + n, tonumber(ARGV[after]))
local id = ARGV[5]
local token = new_token(ARGV[3])
local lm, am = ARGV[1] .. token, ARGV[2] .. token
local reply = write_thread(KEYS[6], KEYS[7], KEYS[8], KEYS[9], 6, lm, am)
if reply[1] ~= 'ok' or reply[5] == 'again' then return reply end
move_member(id, lm, string.sub(ARGV[1], 1, 20) .. token, reply[2], ARGV[13], token)
if reply[5] == 'new' then
  for i = 10, 9 + n do redis.call('SADD', KEYS[i], am) end
end
return reply
""",
)

# A whole append on a standalone server in one script (see WRITE_AND_INDEX). KEYS: l i p e v h
# m q s, then the lookup sets of the step-3 records. ARGV: list prefix, 12 random hex digits,
# thread id, the arguments of append_messages (from ARGV[4]), then the number of step-3 records
# and the records. Replies as append_messages.
APPEND_AND_INDEX = Script(
    "append_and_index",
    _CHUNKS
    + _SETTLE
    + _THREAD
    + _MOVE
    + """
local after = 6 + tonumber(ARGV[5])
settle(after + 1, 10, tonumber(ARGV[after]))
local id = ARGV[3]
local token = new_token(ARGV[2])
local lm = ARGV[1] .. token
local reply = append_messages(KEYS[6], KEYS[7], KEYS[8], KEYS[9], 4, lm)
if reply[1] ~= 'ok' or reply[5] == 'again' then return reply end
move_member(id, lm, string.sub(ARGV[1], 1, 20) .. token, reply[3], reply[4], token)
return reply
""",
)

# A consistent view of the list for one page: the threads to check (pending tokens, or due to
# expire within the margin), each with its members and their ranks, and the members from rank
# `offset` on, enough of them to hold `limit` valid ones whatever the checks find.
# KEYS: l i p e v. ARGV: offset, limit (-1 = all, 0 = none: a count), margin ms.
# Replies {'legacy'} or {'ok', now ms, zcard, window, {{id, tokens, due, {member, rank, ...}}}}.
INDEX_LIST = Script(
    "index_list",
    _CHUNKS
    + """
if redis.call('EXISTS', KEYS[5]) == 0 and redis.call('EXISTS', KEYS[1]) == 1 then
  return {'legacy'}
end
local now = now_ms()
local suspects, order = {}, {}
local pending = redis.call('HGETALL', KEYS[3])
for i = 1, #pending, 2 do
  suspects[pending[i]] = {pending[i + 1], 0}
  order[#order + 1] = pending[i]
end
local due = redis.call('ZRANGE', KEYS[4], '-inf', num(now + tonumber(ARGV[3])), 'BYSCORE')
for _, id in ipairs(due) do
  if suspects[id] then
    suspects[id][2] = 1
  else
    suspects[id] = {'', 1}
    order[#order + 1] = id
  end
end
local out, k = {}, 0
for _, id in ipairs(order) do
  local chunks = redis.call('HGET', KEYS[2], id) or ''
  local ranked = {}
  for i = 1, #chunks, 48 do
    local member = member_of(id, string.sub(chunks, i, i + 47))
    local rank = redis.call('ZREVRANK', KEYS[1], member)
    if rank then
      ranked[#ranked + 1] = member
      ranked[#ranked + 1] = rank
      k = k + 1
    end
  end
  out[#out + 1] = {id, suspects[id][1], suspects[id][2], ranked}
end
local window = {}
local offset, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
if limit ~= 0 then
  local stop = -1
  if limit > 0 then stop = offset + limit + k - 1 end
  window = redis.call('ZRANGE', KEYS[1], offset, stop, 'REV')
end
return {'ok', now, redis.call('ZCARD', KEYS[1]), window, out}
""",
)

# Clear what a reader found settled. Per thread: remove the given members that no header names
# once older than the grace period; then, if the thread's members are exactly the one the reader
# found valid (or none), drop its old pending tokens and the token of that valid member (its
# operation committed it and has no other member left to remove), and if none is left, record
# its expiry bound from the ttl the reader saw (or drop it: no ttl, or gone).
# KEYS: l i p e. ARGV: grace ms, the reader's now ms (taken before it read the headers), then
# per thread: id, valid member ('' = none), pttl ms ('' = gone, -1 = no ttl), n, n members.
INDEX_TIDY = Script(
    "index_tidy",
    _CHUNKS
    + """
local clock = now_ms()
local grace = tonumber(ARGV[1])
local i = 3
while i <= #ARGV do
  local id, valid, pttl, n = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  for j = i + 4, i + 3 + n do
    if clock - stamp(string.sub(ARGV[j], -28)) >= grace then
      redis.call('ZREM', KEYS[1], ARGV[j])
      remove_chunk(KEYS[2], id, chunk_of(ARGV[j]), 48)
    end
  end
  i = i + 4 + n
  local expected = ''
  if valid ~= '' then expected = chunk_of(valid) end
  if (redis.call('HGET', KEYS[2], id) or '') == expected then
    local tokens = redis.call('HGET', KEYS[3], id) or ''
    local committed = string.sub(valid, -28)
    local kept = ''
    for j = 1, #tokens, 28 do
      local token = string.sub(tokens, j, j + 27)
      if clock - stamp(token) < grace and token ~= committed then kept = kept .. token end
    end
    if kept ~= '' then
      redis.call('HSET', KEYS[3], id, kept)
    else
      redis.call('HDEL', KEYS[3], id)
      if pttl == '' or tonumber(pttl) < 0 then
        redis.call('ZREM', KEYS[4], id)
      else
        redis.call('ZADD', KEYS[4], num(tonumber(ARGV[2]) + tonumber(pttl)), id)
      end
    end
  end
end
return 1
""",
)

# Bring an index written by an older release (list members only) to this format, a batch at a
# time from the top: record each member under its thread and give each thread a pending token
# (the member's own, so an old one), so readers check every thread once and then settle it.
# KEYS: l i p v. ARGV: cursor (the last member done, '' = start), batch size.
INDEX_UPGRADE = Script(
    "index_upgrade",
    _CHUNKS
    + """
local cursor = '+'
if ARGV[1] ~= '' then cursor = '(' .. ARGV[1] end
local size = tonumber(ARGV[2])
local batch = redis.call('ZRANGE', KEYS[1], cursor, '-', 'BYLEX', 'REV', 'LIMIT', 0, size)
for _, member in ipairs(batch) do
  local id = string.sub(member, 21, #member - 29)
  add_chunk(KEYS[2], id, chunk_of(member), 48)
  add_chunk(KEYS[3], id, string.sub(member, -28), 28)
end
if #batch < size then
  redis.call('SET', KEYS[4], '1')
  return {'done'}
end
return {'more', batch[#batch]}
""",
)

# Remove lookup-set members a reader found invalid, if they are older than the grace period
# (younger ones may belong to a save still between its steps). KEYS: the sets to clean.
# ARGV: grace seconds, then the members.
INDEX_SWEEP = Script(
    "index_sweep",
    """
local now = tonumber(redis.call('TIME')[1])
local grace = tonumber(ARGV[1])
local removed = 0
for i = 2, #ARGV do
  local member = ARGV[i]
  local stamp = tonumber(string.sub(member, -28, -19))
  if stamp and now - stamp >= grace then
    for _, key in ipairs(KEYS) do removed = removed + redis.call('SREM', key, member) end
  end
end
return removed
""",
)

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
