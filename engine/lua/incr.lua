-- Add deltas to one shard's pending hash, optionally only if the row exists.
-- KEYS[1] pending hash; KEYS[2] accepted-events hash (per code, for metrics);
-- KEYS[3] (optional) the shard's existence bitmap of the table
-- ARGV[1] now (ms); ARGV[2] bit offset of the row (ignored without KEYS[3]);
-- ARGV[3..] field, delta pairs.
-- Returns 1 counted, 0 row does not exist, -1 existence index not loaded.
-- GETBIT never creates a key, so a refused increment leaves nothing behind.
if KEYS[3] then
  if redis.call('GETBIT', KEYS[3], 0) == 0 then return -1 end
  if redis.call('GETBIT', KEYS[3], ARGV[2]) == 0 then return 0 end
end
for i = 3, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[2], string.match(ARGV[i], ':(.*)$'), 1)
  if redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) == 0 then
    -- a like and its unlike cancel out: keep the hash as small as the live set
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
if redis.call('HLEN', KEYS[1]) > 0 then
  redis.call('HSETNX', KEYS[1], '_t', ARGV[1])
end
if redis.call('HLEN', KEYS[1]) == 1 and redis.call('HEXISTS', KEYS[1], '_t') == 1 then
  redis.call('DEL', KEYS[1])
end
return 1
