-- Remove members whose score in KEYS[1] is still <= now (a concurrent write may have raised it
-- meanwhile) from KEYS[1] and from every other key given (same slot). ARGV: now, member...
local now = tonumber(ARGV[1])
local removed = 0
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) <= now then
    for k = 1, #KEYS do
      redis.call('ZREM', KEYS[k], ARGV[i])
    end
    removed = removed + 1
  end
end
return removed
