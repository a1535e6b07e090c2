-- Add a session to its expiry shard pair (KEYS[1] expiry, KEYS[2] lapse: one slot), then sweep
-- up to SWEEP_LIMIT entries whose records Redis's TTL has certainly dropped, by Redis's clock with
-- LAPSE_GRACE_MS of grace for clock skew between nodes. ARGV: member, expires_at, ttl ms (how
-- long the record may live from now, whatever TTL later writes give it before it is indexed
-- again).
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[2], 'GT', now_ms + ttl, ARGV[1])
local dropped = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms - LAPSE_GRACE_MS,
  'LIMIT', 0, SWEEP_LIMIT)
if #dropped > 0 then
  redis.call('ZREM', KEYS[1], unpack(dropped))
  redis.call('ZREM', KEYS[2], unpack(dropped))
end
for i = 1, 2 do
  if redis.call('PTTL', KEYS[i]) < ttl then
    redis.call('PEXPIRE', KEYS[i], ARGV[3])
  end
end
return 1
