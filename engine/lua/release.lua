-- Drop a committed (or already applied) batch, only if it is still the shard's inflight.
-- KEYS: inflight, batch.  ARGV[1] claim token of the batch.  Returns 1 released, 0 not ours.
if redis.call('HGET', KEYS[2], 'token') == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
return 0
