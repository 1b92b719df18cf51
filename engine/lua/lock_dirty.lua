-- Take a shard's flush lock if the shard holds anything to flush, in one step.
-- KEYS: pending, inflight, flush lock.  ARGV[1] lock token, ARGV[2] lock TTL (ms).
-- Returns 0 (nothing to flush; no lock taken), -1 (something to flush, but another
-- flush holds the lock), else the fields of pending and inflight together (deltas, time
-- buckets, bookkeeping), with the lock ours.
local n = redis.call('HLEN', KEYS[1]) + redis.call('HLEN', KEYS[2])
if n == 0 then return 0 end
if not redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then return -1 end
return n
