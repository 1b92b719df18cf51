-- Which of a shard's HyperLogLogs exist (engine/uniques.py: the others hold no visitor
-- the stored ones lack).  KEYS: HyperLogLogs of one shard.
-- Returns the 1-based positions of those that exist.
local out = {}
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then out[#out + 1] = i end
end
return out
