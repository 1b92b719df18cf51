-- Drop a shard's flush lock, only while it still holds our token: a flush that outlived
-- the lock's TTL must not drop the lock a newer flush of the shard has taken since.
-- KEYS[1] the lock.  ARGV[1] our token.  Returns 1 dropped, 0 not ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
