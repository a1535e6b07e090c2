-- Put back a record take_if_version.lua deleted, unless the key exists again. ARGV: ttl ms,
-- field, value, ... Returns WRITTEN when put back, else LOST.
if redis.call('EXISTS', KEYS[1]) == 1 then return LOST end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
if tonumber(ARGV[1]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return WRITTEN
