-- KEYS[1]: the stream the job was read from
-- KEYS[2]: the topic's dead-letter stream
-- ARGV[1]: consumer group
-- ARGV[2]: stream entry id of the job
-- ARGV[3]: approximate maximum length of the dead-letter stream
-- ARGV[4..]: field, value pairs of the dead letter
-- Acknowledges the job and appends the dead letter, atomically. When the entry was no longer
-- pending (another consumer already finished it), nothing is written. Returns 1 or 0.
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if acked == 1 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))
end
return acked
