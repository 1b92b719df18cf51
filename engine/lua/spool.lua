-- Add one shard's part of a spool's views (engine/spool.py), fenced: at most once per
-- spool offset range, whoever sends it and however often.
-- KEYS: pending, accepted-events hash, gen, seq, layout, the shard's spool fences (hash:
-- spool id -> offset pushed), then the existence keys the entries name (bitmaps, sets).
-- ARGV[1] now (ms); ARGV[2] a token of the caller, to start a lineage if the shard has
-- none; ARGV[3] the caller's shard count; ARGV[4] the spool id; ARGV[5] the fence this
-- part follows (the spool offset up to which the shard's views are in); ARGV[6] the
-- offset this part brings it to; ARGV[7] the codes that keep time buckets, as
-- ",code,code," ("" for none); then 5 per entry: field, delta, the KEYS index of the
-- table's existence bitmap (0: no check), the KEYS index of its set of far ids (0: the
-- bitmap holds the row), the row's bit offset (or its id, with the set).
-- Returns {0} added (the fence is now ARGV[6]); {1, fence} already in (fence >= ARGV[6]:
-- a push sent again, or by a survivor); {2, fence} the fence is elsewhere (an earlier
-- part is not in yet, or another sender took a different range); {3, i, ...} entries
-- whose row the index does not show (i > 0: missing, i < 0: index not loaded; entry
-- numbers from 1), for the caller to ask Postgres and send the part again; {-2} / {-3}
-- as incr.lua's -2 / -3 (layout). Nothing is written unless {0} is returned.
-- The additions below are incr.lua's (keep the two in step).
local OLDEST, BASE = '_t', '_b'  -- keys.OLDEST_FIELD, keys.BASE_FIELD
local BUCKET_SEP = '@'  -- keys.BUCKET_SEP
local HOUR_MS = 3600000  -- keys.HOUR_MS
local FIRST = 8
local fence = tonumber(redis.call('HGET', KEYS[6], ARGV[4]) or '0')
local want, upto = tonumber(ARGV[5]), tonumber(ARGV[6])
if fence >= upto then return {1, fence} end
if fence ~= want then return {2, fence} end
local unseen = {}
for i = FIRST, #ARGV, 5 do
  local bits = tonumber(ARGV[i + 2])
  if bits > 0 then
    local n = (i - FIRST) / 5 + 1
    if redis.call('GETBIT', KEYS[bits], 0) == 0 then
      unseen[#unseen + 1] = -n
    else
      local far = tonumber(ARGV[i + 3])
      local found
      if far > 0 then
        found = redis.call('SISMEMBER', KEYS[far], ARGV[i + 4]) == 1
      else
        found = redis.call('GETBIT', KEYS[bits], ARGV[i + 4]) == 1
      end
      if not found then unseen[#unseen + 1] = n end
    end
  end
end
if #unseen > 0 then
  table.insert(unseen, 1, 3)
  return unseen
end
local layout = redis.call('GET', KEYS[5])
if layout ~= ARGV[3] then
  if layout then return {-2} end
  return {-3}
end
redis.call('HSET', KEYS[6], ARGV[4], ARGV[6])
if #ARGV < FIRST then return {0} end
local bucketed = ARGV[7]
local hour = string.format('%d', math.floor(tonumber(ARGV[1]) / HOUR_MS))
local fresh = redis.call('EXISTS', KEYS[1]) == 0
for i = FIRST, #ARGV, 5 do
  local code = string.match(ARGV[i], ':(.*)$')
  redis.call('HINCRBY', KEYS[2], code, 1)
  if redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) == 0 then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
  if bucketed ~= '' and string.find(bucketed, ',' .. code .. ',', 1, true) then
    local bucket = ARGV[i] .. BUCKET_SEP .. hour
    if redis.call('HINCRBY', KEYS[1], bucket, ARGV[i + 1]) == 0 then
      redis.call('HDEL', KEYS[1], bucket)
    end
  end
end
if fresh then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    local gen = redis.call('GET', KEYS[3])
    if not gen then
      local now = redis.call('TIME')
      gen = ARGV[2] .. '.' .. now[1] .. now[2]
      redis.call('SET', KEYS[3], gen)
    end
    redis.call('HSET', KEYS[1], OLDEST, ARGV[1], BASE, gen .. ':' .. (redis.call('GET', KEYS[4]) or '0'))
  end
else
  local n = redis.call('HLEN', KEYS[1])
  if n <= 2 and n == redis.call('HEXISTS', KEYS[1], OLDEST) + redis.call('HEXISTS', KEYS[1], BASE) then
    redis.call('DEL', KEYS[1])
  end
end
return {0}
