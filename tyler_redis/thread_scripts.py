"""The thread-level Lua scripts of the Redis backend: write, append, read and delete one thread.

Each touches only the keys of one thread (see :mod:`tyler_redis.scripts` for what they hold).
:data:`_THREAD`, the thread half of a save and of an append as Lua functions, is also the thread
half of the standalone server's one-step scripts (:mod:`tyler_redis.index_scripts`).
"""

from __future__ import annotations

from tyler_redis.lua import Script

__all__ = ["APPEND", "DELETE", "READ", "WRITE"]


# The thread half of a save and of an append, as Lua functions: the scripts below call them
# alone (a cluster, where the index keys live in another slot); those of index_scripts together
# with the index changes (a standalone server, where one script may touch every key).
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
