-- Delete a session record if it expired by now. ARGV: now. Returns {MISSING} when missing,
-- {DELETED, user id?} when deleted, {LIVE, expires_at, ttl ms, index horizon, user id?} when
-- still live; the ttl covers whatever TTL a write may give the record before it is indexed again.
local stored = redis.call('HMGET', KEYS[1], FIELD_EXPIRES_AT, FIELD_USER, FIELD_HORIZON,
  FIELD_UNTIL)
local expires, user = stored[1], stored[2]
if not expires then return {MISSING} end
if tonumber(expires) <= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  if user then return {DELETED, user} end
  return {DELETED}
end
local ttl = redis.call('PTTL', KEYS[1])
if stored[4] then
  local time = redis.call('TIME')
  local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  ttl = math.max(ttl, tonumber(stored[4]) - now_ms)
end
local horizon = stored[3] or expires
if user then return {LIVE, expires, ttl, horizon, user} end
return {LIVE, expires, ttl, horizon}
