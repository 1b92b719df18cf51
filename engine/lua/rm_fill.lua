-- Fill a row's read model with the values Postgres gave, unless a release or an
-- invalidation came after the caller read the state version, or Postgres holds a batch
-- this Redis has not released yet (its applied seq is not the last one released).
-- KEYS: read model state, row.  ARGV[1] the state version read before Postgres was;
-- ARGV[2] the shard's applied seq as Postgres gave it; ARGV[3] a fresh life token, taken
-- when the shard has none; ARGV[4] TTL (s); ARGV[5..] field, value pairs.
-- Returns 1 filled, 0 fenced off (nothing written).
local RM_LIFE, RM_VERSION, RM_RELEASED, RM_ROW_LIFE = 'l', 'v', 'r', '_l'  -- keys.RM_*
local RM_FILLED, RM_FENCED = 'filled', 'fenced'  -- keys.RM_*
local state = redis.call('HMGET', KEYS[1], RM_LIFE, RM_VERSION, RM_RELEASED)
if (state[2] or '0') ~= ARGV[1] or (state[3] or '0') ~= ARGV[2] then
  redis.call('HINCRBY', KEYS[1], RM_FENCED, 1)
  return 0
end
redis.call('HINCRBY', KEYS[1], RM_FILLED, 1)
local life = state[1]
if not life then
  life = ARGV[3]
  redis.call('HSET', KEYS[1], RM_LIFE, life)
end
-- a row of this life keeps the fields other readers asked for (values never go stale
-- within a life: releases fold into them, invalidations delete the row)
if redis.call('HGET', KEYS[2], RM_ROW_LIFE) ~= life then redis.call('DEL', KEYS[2]) end
redis.call('HSET', KEYS[2], RM_ROW_LIFE, life, unpack(ARGV, 5))
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
