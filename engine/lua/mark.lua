-- Set or clear rows' bits in one shard's existence bitmap, for the caller's layout.
-- KEYS[1] the shard's layout, KEYS[2] the bitmap.  ARGV[1] the caller's shard count,
-- ARGV[2] the bit (0/1), ARGV[3..] bit offsets.
-- Returns 1 done, -2 / -3 as incr.lua (nothing written). While a reshard drains, the
-- index of the layout it moves to is being built: marks for that layout go through.
local DRAINING = 'draining:'  -- keys.DRAINING
local layout = redis.call('GET', KEYS[1])
if not layout then return -3 end
if layout ~= ARGV[1] and layout ~= DRAINING .. ARGV[1] then return -2 end
for i = 3, #ARGV do
  redis.call('SETBIT', KEYS[2], ARGV[i], ARGV[2])
end
return 1
