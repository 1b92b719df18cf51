-- Set or clear rows in one shard's existence index, for the caller's layout: bits of
-- the bitmap, or ids of the set that holds ids too far out for the bitmap.
-- KEYS[1] the shard's layout, KEYS[2] the bitmap or the set.  ARGV[1] the caller's
-- shard count, ARGV[2] the bit (0/1), ARGV[3] 'bits' or 'set', ARGV[4..] bit offsets or
-- ids. Returns 1 done, -2 / -3 as incr.lua (nothing written). While a reshard drains,
-- the index of the layout it moves to is being built: marks for that layout go through.
local DRAINING = 'draining:'  -- keys.DRAINING
local layout = redis.call('GET', KEYS[1])
if not layout then return -3 end
if layout ~= ARGV[1] and layout ~= DRAINING .. ARGV[1] then return -2 end
if ARGV[3] == 'set' then
  local ids = {}
  for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
  for i = 1, #ids, 1000 do  -- Lua's unpack limit
    local chunk = {unpack(ids, i, math.min(i + 999, #ids))}
    redis.call(ARGV[2] == '1' and 'SADD' or 'SREM', KEYS[2], unpack(chunk))
  end
else
  for i = 4, #ARGV do
    redis.call('SETBIT', KEYS[2], ARGV[i], ARGV[2])
  end
end
return 1
