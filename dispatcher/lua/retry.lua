-- KEYS[1]: the stream the failed attempt was read from
-- KEYS[2]: the group's retry delayed set
-- ARGV[1]: consumer group
-- ARGV[2]: stream entry id of the failed attempt
-- ARGV[3]: delay before the next attempt, in ms
-- ARGV[4]: the next attempt as "<meta>\n<payload>"
-- Acknowledges the failed attempt and schedules the next one, atomically. When the entry was no
-- longer pending (another consumer already finished it), nothing is scheduled. Returns 1 when
-- scheduled, 0 otherwise.
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if acked == 1 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[4])
end
return acked
