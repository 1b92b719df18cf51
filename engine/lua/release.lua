-- Drop a committed (or already applied) batch, only if it is still the shard's inflight,
-- and fold its deltas into the rows' read models in the same step (engine/readmodel.py),
-- so that a row's read model plus its pending and inflight deltas never counts a delta
-- twice or not at all.
-- KEYS: inflight, batch, gen, read model state.  ARGV[1] claim token of the batch;
-- ARGV[2] the lineage the ledger holds now when the flush found this Redis behind
-- Postgres, else ''; ARGV[3] the shard's read model key prefix; ARGV[4..] code, table
-- pairs of the counters.
-- Returns 1 released, 0 not ours.
local RM_LIFE, RM_VERSION, RM_RELEASED = 'l', 'v', 'r'  -- keys.RM_*
if redis.call('HGET', KEYS[2], 'token') ~= ARGV[1] then return 0 end
local seq = redis.call('HGET', KEYS[2], 'seq')
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[3], ARGV[2])
  -- Postgres holds what this Redis forgot: no row's read model can be trusted
  redis.call('HDEL', KEYS[4], RM_LIFE)
elseif redis.call('HEXISTS', KEYS[4], RM_LIFE) == 1 then
  local tables = {}
  for i = 4, #ARGV, 2 do tables[ARGV[i]] = ARGV[i + 1] end
  local flat = redis.call('HGETALL', KEYS[1])
  local cached = {}
  for i = 1, #flat, 2 do
    local id, code = string.match(flat[i], '^(%d+):([^@]+)$')
    if id and tables[code] then
      local key = ARGV[3] .. tables[code] .. ':' .. id
      if cached[key] == nil then cached[key] = redis.call('EXISTS', key) == 1 end
      if cached[key] then redis.call('HINCRBY', key, code, flat[i + 1]) end
    end
  end
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HINCRBY', KEYS[4], RM_VERSION, 1)
if seq then redis.call('HSET', KEYS[4], RM_RELEASED, seq) end
return 1
