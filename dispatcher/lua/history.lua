-- KEYS[1]: the topic's history hash of unix hour H-1 (H: ARGV[1], the caller's clock)
-- KEYS[2]: the topic's history hash of hour H
-- KEYS[3]: the topic's history hash of hour H+1
-- ARGV[1]: H, the caller's unix hour
-- ARGV[2]: consumer group
-- ARGV[3]: jobs processed (acknowledged after success) since the last call
-- ARGV[4]: failed attempts (retried or dead-lettered) since the last call
-- ARGV[5]: TTL of the hash, seconds
-- Adds the counts to the minute given by the server's clock: fields "<group>:p:<minute>" and
-- "<group>:f:<minute>" (minute 0..59) of the hash of the server's hour, which is one of KEYS
-- unless the clocks disagree by more than an hour (then KEYS[2]). Returns the minute.
local t = redis.call('TIME')
local secs = tonumber(t[1])
local hour = math.floor(secs / 3600)
local minute = math.floor((secs % 3600) / 60)
local i = hour - tonumber(ARGV[1]) + 2
if i < 1 or i > 3 then
  i = 2
end
local key = KEYS[i]
if tonumber(ARGV[3]) > 0 then
  redis.call('HINCRBY', key, ARGV[2] .. ':p:' .. minute, ARGV[3])
end
if tonumber(ARGV[4]) > 0 then
  redis.call('HINCRBY', key, ARGV[2] .. ':f:' .. minute, ARGV[4])
end
redis.call('EXPIRE', key, ARGV[5])
return minute
