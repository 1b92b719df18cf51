-- Give the inflight batch its seq, once: the first assignment wins.
-- KEYS: batch, seq, pending.  ARGV[1] claim token, ARGV[2] a fresh seq from Postgres
-- ('' when the batch already has one), ARGV[3] now (ms).
-- Returns the batch's seq, or false when the batch is no longer the one claimed
-- under this token (another flush finished it and a newer batch may be inflight).
-- Always writes, so that a WAITAOF sent behind it on the same connection covers the
-- batch: WAITAOF waits only for its own connection's writes, and the AOF is sequential,
-- so once this write is fsynced, so are the claim and seq another flusher wrote before.
-- The pending hash, if any, was created after the claim (or is what a bounded claim
-- left): the batch numbered here is the one before it, so its base (keys.BASE_FIELD)
-- becomes this seq, in the lineage the hash was created in: a hash left over from
-- before a rollback (engine/lineage.py) must not pass for a new one.
local BASE = '_b'  -- keys.BASE_FIELD
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return false end
local seq = redis.call('HGET', KEYS[1], 'seq')
if seq then
  redis.call('HSET', KEYS[1], 'fenced_ms', ARGV[3])
  return seq
end
if ARGV[2] == '' then return false end
redis.call('HSET', KEYS[1], 'seq', ARGV[2])
redis.call('SET', KEYS[2], ARGV[2])
local base = redis.call('HGET', KEYS[3], BASE)
if base then
  redis.call('HSET', KEYS[3], BASE, string.match(base, '^(.*):') .. ':' .. ARGV[2])
end
return ARGV[2]
