-- Count one event in a fixed window that starts at the first hit.
-- ARGV: now, the window end should this hit open a new window. Returns {count, window end}.
local now = tonumber(ARGV[1])
local ends = redis.call('HGET', KEYS[1], FIELD_WINDOW_END)
if not ends or tonumber(ends) <= now then
  ends = ARGV[2]
  redis.call('HSET', KEYS[1], FIELD_COUNT, 0, FIELD_WINDOW_END, ends)
end
local count = redis.call('HINCRBY', KEYS[1], FIELD_COUNT, 1)
local ttl = math.max(1, math.ceil((tonumber(ends) - now) * 1000))
redis.call('PEXPIRE', KEYS[1], string.format('%d', ttl))
return {count, ends}
