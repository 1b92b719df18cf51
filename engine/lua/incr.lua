-- Add deltas to one shard's pending hash, optionally only if the row exists.
-- KEYS: pending, accepted-events hash (per code, for metrics), gen, seq, layout, and
-- optionally the shard's existence bitmap of the table, then its set of ids too far
-- out for the bitmap (only for such an id).
-- ARGV[1] now (ms); ARGV[2] a token of the caller, to start a lineage if the shard has
-- none; ARGV[3] the caller's shard count; ARGV[4] the row's bit offset, or its id when
-- the set is given (ignored without the bitmap); ARGV[5] the codes that keep time
-- buckets, as ",code,code," ("" for none); ARGV[6..] field, delta pairs.
-- Returns 1 counted, 0 row does not exist, -1 existence index not loaded, -2 the shard
-- is laid out for another shard count (or being resharded), -3 the shard's layout is
-- unknown (a new or wiped Redis: the caller sets it up from Postgres and calls again).
-- Nothing is written unless 1 is returned; GETBIT never creates a key, so a refused
-- increment (an unknown id) leaves nothing behind. The layout is checked only before
-- writing: a miss writes nothing either way.
local OLDEST, BASE = '_t', '_b'  -- keys.OLDEST_FIELD, keys.BASE_FIELD
local BUCKET_SEP = '@'  -- keys.BUCKET_SEP
local HOUR_MS = 3600000  -- keys.HOUR_MS
if KEYS[6] then
  if redis.call('GETBIT', KEYS[6], 0) == 0 then return -1 end
  if KEYS[7] then
    if redis.call('SISMEMBER', KEYS[7], ARGV[4]) == 0 then return 0 end
  elseif redis.call('GETBIT', KEYS[6], ARGV[4]) == 0 then
    return 0
  end
end
local layout = redis.call('GET', KEYS[5])
if layout ~= ARGV[3] then
  if layout then return -2 end
  return -3
end
local fresh = redis.call('EXISTS', KEYS[1]) == 0
for i = 6, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[2], string.match(ARGV[i], ':(.*)$'), 1)
  if redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) == 0 then
    -- a like and its unlike cancel out: keep the hash as small as the live set
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
-- Time buckets: what a bucketed field got also goes to its "<field>@<hour>" (keys.
-- bucket_field), the hour being that of ARGV[1], so the batch carries both together.
if ARGV[5] ~= '' then
  local hour = string.format('%d', math.floor(tonumber(ARGV[1]) / HOUR_MS))
  for i = 6, #ARGV, 2 do
    if string.find(ARGV[5], ',' .. string.match(ARGV[i], ':(.*)$') .. ',', 1, true) then
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
return 1
