-- KEYS[1]: a delayed set (sorted set of "<meta>\n<payload>" members, score = due unix ms)
-- KEYS[2]: the stream due members move to (the topic stream, or one group's retry stream)
-- ARGV[1]: the most members to move in this call
-- Moves every due member (up to ARGV[1]) into the stream, atomically: a member is in exactly one
-- of the two keys at any time. Returns the number moved.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  local cut = string.find(member, '\n', 1, true)
  if cut then
    redis.call('XADD', KEYS[2], '*', 'meta', string.sub(member, 1, cut - 1),
      'payload', string.sub(member, cut + 1))
  else
    -- Not written by Sluice: pass it on whole, the worker dead-letters what it can't decode.
    redis.call('XADD', KEYS[2], '*', 'meta', member, 'payload', '')
  end
  redis.call('ZREM', KEYS[1], member)
end
return #due
