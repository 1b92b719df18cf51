-- Atomic snapshot of a shard's unapplied time-bucket deltas of one counter.
-- KEYS: pending, inflight, batch, seq.  ARGV[1] ":<code>@" (what its bucket fields hold).
-- Returns {pending {field, delta, ...}, inflight {field, delta, ...}, inflight seq or
-- false, last assigned seq or false, pending base or false, inflight base or false},
-- as read.lua does for named fields.
local BASE = '_b'  -- keys.BASE_FIELD
local function buckets(key)
  local out, all = {}, redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    if string.find(all[i], ARGV[1], 1, true) then
      out[#out + 1] = all[i]
      out[#out + 1] = all[i + 1]
    end
  end
  return out
end
return {buckets(KEYS[1]), buckets(KEYS[2]), redis.call('HGET', KEYS[3], 'seq'),
        redis.call('GET', KEYS[4]), redis.call('HGET', KEYS[1], BASE),
        redis.call('HGET', KEYS[2], BASE)}
