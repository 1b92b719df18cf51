-- Keep one sample of the engine per minute: the first process to sample a minute wins,
-- so every web process and worker adds to one series. Drops minutes older than the
-- oldest kept (once per minute, when a new one is added) and renews the hash's TTL.
-- KEYS[1] the activity hash.  ARGV[1] minute (ms / 60000)  ARGV[2] the sample (JSON)
-- ARGV[3] oldest minute kept  ARGV[4] TTL (ms).  Returns the hash: minute, sample, ...
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  local oldest = tonumber(ARGV[3])
  for _, minute in ipairs(redis.call('HKEYS', KEYS[1])) do
    if tonumber(minute) < oldest then
      redis.call('HDEL', KEYS[1], minute)
    end
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return redis.call('HGETALL', KEYS[1])
