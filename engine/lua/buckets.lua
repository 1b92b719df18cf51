-- Atomic snapshot of a shard's unapplied time-bucket deltas of one counter, summed per
-- row over the hours from ARGV[2] on.
-- KEYS: pending, inflight, batch, seq.  ARGV[1] ":<code>@" (what its bucket fields
-- hold: "<id>:<code>@<hour>", keys.bucket_field), ARGV[2] the first hour to count.
-- Returns {pending {id, sum, ...}, inflight {id, sum, ...}, inflight seq or false, last
-- assigned seq or false, pending base or false, inflight base or false}, as read.lua.
local BASE = '_b'  -- keys.BASE_FIELD
local first = tonumber(ARGV[2])
local function sums(key)
  local per_row, order, all = {}, {}, redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    local at = string.find(all[i], ARGV[1], 1, true)
    if at and tonumber(string.sub(all[i], at + #ARGV[1])) >= first then
      local row = string.sub(all[i], 1, at - 1)
      if not per_row[row] then order[#order + 1] = row; per_row[row] = 0 end
      per_row[row] = per_row[row] + tonumber(all[i + 1])
    end
  end
  local out = {}
  for _, row in ipairs(order) do
    out[#out + 1] = row
    out[#out + 1] = per_row[row]
  end
  return out
end
return {sums(KEYS[1]), sums(KEYS[2]), redis.call('HGET', KEYS[3], 'seq'),
        redis.call('GET', KEYS[4]), redis.call('HGET', KEYS[1], BASE),
        redis.call('HGET', KEYS[2], BASE)}
