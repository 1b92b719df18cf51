-- Claim a shard's pending deltas as one batch, or resume the batch a crashed flush left.
-- KEYS: pending, inflight, batch, seq.  ARGV[1] a fresh claim token, ARGV[2] now (ms),
-- ARGV[3] the most delta fields one batch may hold.
-- Returns false when there is nothing to flush, else
-- {token, seq or false, claimed_ms, resumed (0/1), {field, delta, ...}, base or false,
--  partial (0/1: pending kept the fields beyond the bound)}.
-- A new batch has no seq yet: it gets one (assign.lua) only after this claim, so its
-- seq is above every seq handed out before it existed. The inflight hash is immutable
-- until release: increments keep landing in pending. The base (keys.BASE_FIELD) and the
-- oldest-delta time go with the batch; what a bounded claim leaves in pending keeps
-- them too, and its base becomes the batch's seq when that is assigned.
local OLDEST, BASE = '_t', '_b'  -- keys.OLDEST_FIELD, keys.BASE_FIELD
local MOVE_CHUNK = 1000  -- fields per HSET/HDEL while splitting (Lua's unpack limit)
if redis.call('EXISTS', KEYS[2]) == 1 then
  local token = redis.call('HGET', KEYS[3], 'token')
  if not token then
    -- inflight without identity can only come from a hand edit: adopt it
    token = ARGV[1]
    redis.call('HSET', KEYS[3], 'token', token, 'claimed_ms', ARGV[2])
  end
  return {token, redis.call('HGET', KEYS[3], 'seq'), redis.call('HGET', KEYS[3], 'claimed_ms'),
          1, redis.call('HGETALL', KEYS[2]), redis.call('HGET', KEYS[2], BASE), 0}
end
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local limit = tonumber(ARGV[3])
local meta = redis.call('HEXISTS', KEYS[1], OLDEST) + redis.call('HEXISTS', KEYS[1], BASE)
local partial = 0
if redis.call('HLEN', KEYS[1]) - meta <= limit then
  redis.call('RENAME', KEYS[1], KEYS[2])
else
  partial = 1
  local moved, cursor = 0, '0'
  repeat
    local page = redis.call('HSCAN', KEYS[1], cursor, 'COUNT', MOVE_CHUNK)
    cursor = page[1]
    local moves, names = {}, {}
    for i = 1, #page[2], 2 do
      local name = page[2][i]
      if moved < limit and string.sub(name, 1, 1) ~= '_' then
        moves[#moves + 1] = name
        moves[#moves + 1] = page[2][i + 1]
        names[#names + 1] = name
        moved = moved + 1
        if #names == MOVE_CHUNK then
          redis.call('HSET', KEYS[2], unpack(moves))
          redis.call('HDEL', KEYS[1], unpack(names))
          moves, names = {}, {}
        end
      end
    end
    if #names > 0 then
      redis.call('HSET', KEYS[2], unpack(moves))
      redis.call('HDEL', KEYS[1], unpack(names))
    end
  until cursor == '0' or moved >= limit
  for _, name in ipairs({OLDEST, BASE}) do
    local value = redis.call('HGET', KEYS[1], name)
    if value then redis.call('HSET', KEYS[2], name, value) end
  end
end
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'token', ARGV[1], 'claimed_ms', ARGV[2])
return {ARGV[1], false, ARGV[2], 0, redis.call('HGETALL', KEYS[2]), redis.call('HGET', KEYS[2], BASE),
        partial}
