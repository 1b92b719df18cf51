-- Claim a shard's pending deltas as one batch, or resume the batch a crashed flush left.
-- KEYS: pending, inflight, batch, seq.  ARGV[1] a fresh claim token, ARGV[2] now (ms).
-- Returns false when there is nothing to flush, else
-- {token, seq or false, claimed_ms, resumed (0/1), {field, delta, ...}, base or false}.
-- A new batch has no seq yet: it gets one (assign.lua) only after this claim, so its
-- seq is above every seq handed out before it existed. The inflight hash is immutable
-- until release: increments keep landing in pending. The base (keys.BASE_FIELD) moves
-- with the hash.
local BASE = '_b'  -- keys.BASE_FIELD
if redis.call('EXISTS', KEYS[2]) == 1 then
  local token = redis.call('HGET', KEYS[3], 'token')
  if not token then
    -- inflight without identity can only come from a hand edit: adopt it
    token = ARGV[1]
    redis.call('HSET', KEYS[3], 'token', token, 'claimed_ms', ARGV[2])
  end
  return {token, redis.call('HGET', KEYS[3], 'seq'), redis.call('HGET', KEYS[3], 'claimed_ms'),
          1, redis.call('HGETALL', KEYS[2]), redis.call('HGET', KEYS[2], BASE)}
end
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'token', ARGV[1], 'claimed_ms', ARGV[2])
return {ARGV[1], false, ARGV[2], 0, redis.call('HGETALL', KEYS[2]), redis.call('HGET', KEYS[2], BASE)}
