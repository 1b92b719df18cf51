-- Extend a shard's flush lock, only while it still holds our token (a flush draining a
-- backlog batch after batch keeps its shard; one that lost the lock stops).
-- KEYS[1] the lock.  ARGV[1] our token, ARGV[2] the new TTL (ms).  Returns 1, or 0 not ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
