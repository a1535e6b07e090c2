-- Delete a session record if its stored version is ARGV[1] (the old half of a replace).
-- Returns LOST when missing or another version, else {ttl ms, field, value, ...}: what it
-- deleted, so that the caller can put it back if the new half of the replace failed.
if redis.call('HGET', KEYS[1], FIELD_VERSION) ~= ARGV[1] then return LOST end
local taken = redis.call('HGETALL', KEYS[1])
table.insert(taken, 1, redis.call('PTTL', KEYS[1]))
redis.call('DEL', KEYS[1])
return taken
