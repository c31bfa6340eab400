-- KEYS[1]: the topic's dead-letter stream
-- KEYS[2]: the stream the job goes back to (the failing group's retry stream)
-- ARGV[1]: dead-letter entry id
-- ARGV[2]: job metadata for the replayed job (attempt count reset)
-- Moves one dead letter back into work, atomically: the payload is copied from the dead letter,
-- the dead letter is deleted. Returns the new stream entry id, or false when the dead letter is
-- gone (already replayed).
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then
  return false
end
local fields = found[1][2]
local payload = ''
for i = 1, #fields, 2 do
  if fields[i] == 'payload' then
    payload = fields[i + 1]
  end
end
local id = redis.call('XADD', KEYS[2], '*', 'meta', ARGV[2], 'payload', payload)
redis.call('XDEL', KEYS[1], ARGV[1])
return id
