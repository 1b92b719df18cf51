-- Add deltas to one shard's pending hash, optionally only if the row exists, optionally
-- under a view policy's rule (engine/policy.py).
-- KEYS: pending, accepted-events hash (per code, for metrics), gen, seq, layout; then the
-- rule's keys (ARGV[5] of them: held hash, and for a view: seen set of this slot, of the
-- slot before, the row's HyperLogLog, the alias' seen set of this slot); then optionally
-- the shard's existence bitmap of the
-- table, then its set of ids too far out for the bitmap (only for such an id).
-- ARGV[1] now (ms); ARGV[2] a token of the caller, to start a lineage if the shard has
-- none; ARGV[3] the caller's shard count; ARGV[4] the row's bit offset, or its id when
-- the set is given (ignored without the bitmap); ARGV[5] how many rule keys; with a rule,
-- ARGV[6..12] rule ('view', 'bot' or 'self'), held field, pair member, slot expiry (unix
-- s), unique viewer, HyperLogLog TTL (s), the alias' pair member or ''; then the codes
-- that keep time buckets, as ",code,code," ("" for none); then field, delta pairs.
-- Returns 1 counted, 2 held back by the rule (a repeat, a crawler or an own view: only
-- the held counter, and a crawler's pairs, were written), 0 row does not exist, -1
-- existence index not loaded, -2 the shard is laid out for another shard count (or being
-- resharded), -3 the shard's layout is unknown (a new or wiped Redis: the caller sets it
-- up from Postgres and calls again).
-- Nothing is written unless 1 or 2 is returned; GETBIT never creates a key, so a refused
-- increment (an unknown id) leaves nothing behind. The layout is checked only before
-- writing: a miss writes nothing either way.
local OLDEST, BASE = '_t', '_b'  -- keys.OLDEST_FIELD, keys.BASE_FIELD
local BUCKET_SEP = '@'  -- keys.BUCKET_SEP
local HOUR_MS = 3600000  -- keys.HOUR_MS
local ex = 6 + tonumber(ARGV[5])
if KEYS[ex] then
  if redis.call('GETBIT', KEYS[ex], 0) == 0 then return -1 end
  if KEYS[ex + 1] then
    if redis.call('SISMEMBER', KEYS[ex + 1], ARGV[4]) == 0 then return 0 end
  elseif redis.call('GETBIT', KEYS[ex], ARGV[4]) == 0 then
    return 0
  end
end
local layout = redis.call('GET', KEYS[5])
if layout ~= ARGV[3] then
  if layout then return -2 end
  return -3
end
local first, reply = 6, 1
if ex > 6 then
  first = 13
  local rule = ARGV[6]
  if rule == 'view' then
    if redis.call('SISMEMBER', KEYS[7], ARGV[8]) == 1 or redis.call('SISMEMBER', KEYS[8], ARGV[8]) == 1 then
      redis.call('HINCRBY', KEYS[6], ARGV[7], 1)
      return 2
    end
    redis.call('SADD', KEYS[7], ARGV[8])
    redis.call('EXPIREAT', KEYS[7], ARGV[9])
    redis.call('PFADD', KEYS[9], ARGV[10])
    redis.call('EXPIRE', KEYS[9], ARGV[11])
    if ARGV[12] ~= '' then  -- the visitor's next request comes with its new cookie
      redis.call('SADD', KEYS[10], ARGV[12])
      redis.call('EXPIREAT', KEYS[10], ARGV[9])
    end
  else  -- 'self' adds nothing, 'bot' adds its pairs (the crawlers' counter)
    redis.call('HINCRBY', KEYS[6], ARGV[7], 1)
    reply = 2
  end
end
local bucketed = ARGV[first]  -- the codes that keep time buckets
first = first + 1
local fresh = redis.call('EXISTS', KEYS[1]) == 0
for i = first, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[2], string.match(ARGV[i], ':(.*)$'), 1)
  if redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) == 0 then
    -- a like and its unlike cancel out: keep the hash as small as the live set
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
-- Time buckets: what a bucketed field got also goes to its "<field>@<hour>" (keys.
-- bucket_field), the hour being that of ARGV[1], so the batch carries both together.
if bucketed ~= '' then
  local hour = string.format('%d', math.floor(tonumber(ARGV[1]) / HOUR_MS))
  for i = first, #ARGV, 2 do
    if string.find(bucketed, ',' .. string.match(ARGV[i], ':(.*)$') .. ',', 1, true) then
      local bucket = ARGV[i] .. BUCKET_SEP .. hour
      if redis.call('HINCRBY', KEYS[1], bucket, ARGV[i + 1]) == 0 then
        redis.call('HDEL', KEYS[1], bucket)
      end
    end
  end
end
if fresh then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    -- a new batch in the making: it comes right after the shard's last numbered one
    local gen = redis.call('GET', KEYS[3])
    if not gen then
      -- first writer of a new (or wiped) Redis; TIME keeps two wipes apart
      local now = redis.call('TIME')
      gen = ARGV[2] .. '.' .. now[1] .. now[2]
      redis.call('SET', KEYS[3], gen)
    end
    redis.call('HSET', KEYS[1], OLDEST, ARGV[1], BASE, gen .. ':' .. (redis.call('GET', KEYS[4]) or '0'))
  end
else
  local n = redis.call('HLEN', KEYS[1])
  if n <= 2 and n == redis.call('HEXISTS', KEYS[1], OLDEST) + redis.call('HEXISTS', KEYS[1], BASE) then
    redis.call('DEL', KEYS[1])  -- deltas cancelled out: only the bookkeeping was left
  end
end
return reply
