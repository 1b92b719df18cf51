-- Atomic snapshot of a shard's unapplied deltas for some fields.
-- KEYS: pending, inflight, batch, seq.  ARGV: fields.
-- Returns {pending deltas, inflight deltas, inflight seq or false (none yet, or no
-- inflight), last assigned seq or false, pending base or false, inflight base or false}.
local BASE = '_b'  -- keys.BASE_FIELD
local pending = redis.call('HMGET', KEYS[1], unpack(ARGV))
local inflight = redis.call('HMGET', KEYS[2], unpack(ARGV))
return {pending, inflight, redis.call('HGET', KEYS[3], 'seq'), redis.call('GET', KEYS[4]),
        redis.call('HGET', KEYS[1], BASE), redis.call('HGET', KEYS[2], BASE)}
