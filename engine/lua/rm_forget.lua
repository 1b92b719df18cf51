-- Forget rows' read models (a reconcile fixed them, they were deleted or edited): with
-- no row given, every row of the shard. A fill that read the state before this call is
-- fenced off by the version it bumps.
-- KEYS: read model state, then the rows.
local RM_LIFE, RM_VERSION = 'l', 'v'  -- keys.RM_*
redis.call('HINCRBY', KEYS[1], RM_VERSION, 1)
if #KEYS == 1 then
  redis.call('HDEL', KEYS[1], RM_LIFE)
else
  redis.call('DEL', unpack(KEYS, 2))
end
return 1
