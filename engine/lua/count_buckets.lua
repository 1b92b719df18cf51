-- Time-bucket fields ("<id>:<code>@<hour>", keys.bucket_field) in each hash of KEYS,
-- so that a backlog counts counters, not their buckets. O(fields): for stats only.
local SEP = '@'  -- keys.BUCKET_SEP
local out = {}
for i, key in ipairs(KEYS) do
  local n = 0
  for _, name in ipairs(redis.call('HKEYS', key)) do
    if string.find(name, SEP, 1, true) then n = n + 1 end
  end
  out[i] = n
end
return out
