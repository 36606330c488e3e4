"""The index-level Lua scripts of the Redis backend, and the one-step save and append.

The index scripts touch only the namespace's index keys (see :mod:`tyler_redis.scripts` for what
they hold): begin and settle an operation, read a consistent view of the list, tidy, upgrade and
sweep. :data:`WRITE_AND_INDEX` and :data:`APPEND_AND_INDEX` are a whole save and a whole append
on a standalone server: the thread half (:data:`~tyler_redis.thread_scripts._THREAD`) and the
index half in one script.
"""

from __future__ import annotations

from tyler_redis.lua import Script
from tyler_redis.thread_scripts import _THREAD

__all__ = [
    "APPEND_AND_INDEX",
    "INDEX_ADD",
    "INDEX_LIST",
    "INDEX_SETTLE",
    "INDEX_SWEEP",
    "INDEX_TIDY",
    "INDEX_UPGRADE",
    "WRITE_AND_INDEX",
]


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
