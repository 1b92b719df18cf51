-- Drop a committed (or already applied) batch, only if it is still the shard's inflight.
-- KEYS: inflight, batch, gen.  ARGV[1] claim token of the batch; ARGV[2] (optional) the
-- lineage the ledger holds now, when the flush found this Redis behind Postgres.
-- Returns 1 released, 0 not ours.
if redis.call('HGET', KEYS[2], 'token') == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  if ARGV[2] then redis.call('SET', KEYS[3], ARGV[2]) end
  return 1
end
return 0
