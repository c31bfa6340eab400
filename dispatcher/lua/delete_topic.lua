-- One step of deleting every key of a topic: one SCAN step, then DEL of the topic's keys it
-- found. The caller repeats it until the cursor comes back as "0".
-- KEYS[1]: the topic stream (names the topic's slot, so on a Cluster this runs on the node
--          holding every key of the topic: they all share the topic's hash tag)
-- ARGV[1]: the SCAN cursor ("0" to start)
-- ARGV[2]: MATCH pattern: the topic's key prefix, glob-escaped, then "*"
-- ARGV[3]: the topic's key prefix itself ("<prefix>:{<topic>}:"), checked before each DEL
-- ARGV[4]: the SCAN COUNT hint
-- Returns {next cursor, keys deleted in this step}.
local reply = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[4])
local prefix = ARGV[3]
local deleted = 0
for _, key in ipairs(reply[2]) do
  if string.sub(key, 1, #prefix) == prefix then
    deleted = deleted + redis.call('DEL', key)
  end
end
return {reply[1], deleted}
