-- Add a member to a user index or to users (scored by its index horizon), never lowering its
-- score, drop members whose horizon ended long ago by the writer's clock, and make the index
-- outlive everything written into it. ARGV: member, score, ttl ms, trim bound (members scored
-- below it go).
redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[4])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
