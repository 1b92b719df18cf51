-- How many fields a flush of this shard would take: pending and inflight together.
-- KEYS: pending, inflight.  Returns HLEN(pending) + HLEN(inflight) (0: nothing to flush).
return redis.call('HLEN', KEYS[1]) + redis.call('HLEN', KEYS[2])
