-- Merge a row's stored unique-viewer HyperLogLog back into Redis and read it out.
-- KEYS[1] the row's HyperLogLog, KEYS[2] a scratch key of the same shard.
-- ARGV[1] the HyperLogLog Postgres keeps ('' for none), ARGV[2] its TTL in Redis (s).
-- Returns {bytes, estimate} of the union, or false when there is neither.
-- A union is idempotent: merging the same stored HyperLogLog again changes nothing, so
-- a flush that dies after this and runs again (or runs twice) does no harm.
if ARGV[1] ~= '' then
  redis.call('SET', KEYS[2], ARGV[1])
  -- a stored value Redis does not take as a HyperLogLog is ignored, not fatal
  redis.pcall('PFMERGE', KEYS[1], KEYS[2])
  redis.call('DEL', KEYS[2])
end
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {redis.call('GET', KEYS[1]), redis.call('PFCOUNT', KEYS[1])}
