-- Claim a shard's pending deltas as one batch, or resume the batch a crashed flush left.
-- KEYS: pending, inflight, batch, seq.  ARGV[1] fresh batch seq, ARGV[2] now (ms).
-- Returns false when there is nothing to flush, else
-- {seq, claimed_ms, resumed (0/1), {field, delta, ...}}.
-- The inflight hash is immutable until release: increments keep landing in pending.
if redis.call('EXISTS', KEYS[2]) == 1 then
  local seq = redis.call('HGET', KEYS[3], 'seq')
  local claimed = redis.call('HGET', KEYS[3], 'claimed_ms')
  if not seq then
    -- inflight without identity can only come from a hand edit; give it a fresh one
    seq = ARGV[1]
    claimed = ARGV[2]
    redis.call('HSET', KEYS[3], 'seq', seq, 'claimed_ms', claimed)
    redis.call('SET', KEYS[4], seq)
  end
  return {seq, claimed, 1, redis.call('HGETALL', KEYS[2])}
end
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[3], 'seq', ARGV[1], 'claimed_ms', ARGV[2])
redis.call('SET', KEYS[4], ARGV[1])
return {ARGV[1], ARGV[2], 0, redis.call('HGETALL', KEYS[2])}
