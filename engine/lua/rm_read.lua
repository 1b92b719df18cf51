-- A row's read model, if it may be read (engine/readmodel.py).
-- KEYS: read model state, row.  ARGV: the fields wanted.
-- Returns {state version, values or false}: values only when the row was filled under
-- the shard's current life token (so not before a restart, a rollback, a reshard).
-- Counts the hits (a metric); a miss writes nothing: the row may not exist at all.
local RM_LIFE, RM_VERSION, RM_ROW_LIFE = 'l', 'v', '_l'  -- keys.RM_*
local RM_HITS = 'hit'  -- keys.RM_HITS
local state = redis.call('HMGET', KEYS[1], RM_LIFE, RM_VERSION)
local version = state[2] or '0'
if not state[1] or redis.call('HGET', KEYS[2], RM_ROW_LIFE) ~= state[1] then
  return {version, false}
end
redis.call('HINCRBY', KEYS[1], RM_HITS, 1)
return {version, redis.call('HMGET', KEYS[2], unpack(ARGV))}
