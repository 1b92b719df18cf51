-- Give the inflight batch its seq, once: the first assignment wins.
-- KEYS: batch, seq, pending, gen.  ARGV[1] claim token, ARGV[2] a fresh seq from Postgres.
-- Returns the batch's seq, or false when the batch is no longer the one claimed
-- under this token (another flush finished it and a newer batch may be inflight).
-- The pending hash, if any, was created after the claim: the batch numbered here is
-- the one before it, so its base (keys.BASE_FIELD) becomes this seq.
local BASE = '_b'  -- keys.BASE_FIELD
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return false end
local seq = redis.call('HGET', KEYS[1], 'seq')
if seq then return seq end
redis.call('HSET', KEYS[1], 'seq', ARGV[2])
redis.call('SET', KEYS[2], ARGV[2])
local base = redis.call('HGET', KEYS[3], BASE)
if base then
  local gen = redis.call('GET', KEYS[4]) or string.match(base, '^(.*):')
  redis.call('HSET', KEYS[3], BASE, gen .. ':' .. ARGV[2])
end
return ARGV[2]
