-- Write a session record if the stored version is the one the caller read.
-- ARGV: expected version (INSERT_VERSION: insert only), new version, expires_at, record JSON,
-- ttl ms, owner (USER_MARK .. user id, or ANONYMOUS), then either index horizon and coverage ttl
-- ms (the caller (re)indexed the session in this pipeline) or NOT_REINDEXED (it did not: the
-- indexes must already cover this write). Returns WRITTEN, LOST when another request won or the
-- record is gone, NOT_COVERED when nothing was written because the indexes do not cover the write.
local stored = redis.call('HMGET', KEYS[1],
  FIELD_VERSION, FIELD_USER, FIELD_OWNER, FIELD_HORIZON, FIELD_UNTIL)
if ARGV[1] == INSERT_VERSION then
  if stored[1] then return LOST end
elseif stored[1] ~= ARGV[1] then
  return LOST
end
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local owner = ARGV[6]
if ARGV[7] == NOT_REINDEXED then
  local user_owner = ANONYMOUS
  if stored[2] then user_owner = USER_MARK .. stored[2] end
  if stored[3] ~= owner or user_owner ~= owner or not stored[4] or not stored[5]
      or tonumber(stored[4]) < tonumber(ARGV[3])
      or tonumber(stored[5]) < now_ms + tonumber(ARGV[5]) then
    return NOT_COVERED
  end
  redis.call('HSET', KEYS[1],
    FIELD_VERSION, ARGV[2], FIELD_EXPIRES_AT, ARGV[3], FIELD_RECORD, ARGV[4])
else
  local covered = string.format('%d', now_ms + tonumber(ARGV[8]))
  if owner == ANONYMOUS then
    if stored[2] then redis.call('HDEL', KEYS[1], FIELD_USER) end
    redis.call('HSET', KEYS[1],
      FIELD_VERSION, ARGV[2], FIELD_EXPIRES_AT, ARGV[3], FIELD_RECORD, ARGV[4],
      FIELD_OWNER, owner, FIELD_HORIZON, ARGV[7], FIELD_UNTIL, covered)
  else
    redis.call('HSET', KEYS[1],
      FIELD_VERSION, ARGV[2], FIELD_EXPIRES_AT, ARGV[3], FIELD_RECORD, ARGV[4],
      FIELD_OWNER, owner, FIELD_HORIZON, ARGV[7], FIELD_UNTIL, covered,
      FIELD_USER, string.sub(owner, #USER_MARK + 1))
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return WRITTEN
