-- KEYS[1]: the topic stream
-- KEYS[2]: the topic's delayed set (sorted set, score = due time in unix ms)
-- KEYS[3]: (optional) the dedup key of this job
-- ARGV[1]: job metadata (compact JSON, never contains a raw newline)
-- ARGV[2]: payload bytes
-- ARGV[3]: when: "now", "at" (ARGV[4] is a unix time in ms) or "in" (ARGV[4] is a delay in ms,
--          counted from the server's clock)
-- ARGV[4]: milliseconds, see ARGV[3]
-- ARGV[5]: dedup TTL in ms (only read when KEYS[3] is given)
-- ARGV[6]: the job id (stored under the dedup key)
-- Returns {"queued", stream entry id}, {"delayed", due unix ms} or {"duplicate", id of the job
-- that holds the dedup key}.
if KEYS[3] then
  local ok = redis.call('SET', KEYS[3], ARGV[6], 'NX', 'PX', ARGV[5])
  if not ok then
    local holder = redis.call('GET', KEYS[3])
    return {'duplicate', holder or ''}
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = now
if ARGV[3] == 'at' then
  due = tonumber(ARGV[4])
elseif ARGV[3] == 'in' then
  due = now + tonumber(ARGV[4])
end
if due > now then
  redis.call('ZADD', KEYS[2], due, ARGV[1] .. '\n' .. ARGV[2])
  -- %.0f: whole milliseconds, never the exponent form tostring() gives past 14 digits.
  return {'delayed', string.format('%.0f', due)}
end
local id = redis.call('XADD', KEYS[1], '*', 'meta', ARGV[1], 'payload', ARGV[2])
return {'queued', id}
