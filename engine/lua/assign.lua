-- Give the inflight batch its seq, once: the first assignment wins.
-- KEYS: batch, seq.  ARGV[1] claim token, ARGV[2] a fresh seq from Postgres.
-- Returns the batch's seq, or false when the batch is no longer the one claimed
-- under this token (another flush finished it and a newer batch may be inflight).
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return false end
local seq = redis.call('HGET', KEYS[1], 'seq')
if seq then return seq end
redis.call('HSET', KEYS[1], 'seq', ARGV[2])
redis.call('SET', KEYS[2], ARGV[2])
return ARGV[2]
