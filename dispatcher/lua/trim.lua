-- KEYS[1]: a stream with consumer groups (the topic stream or one group's retry stream)
-- No ARGV.
-- Trims the entries that every group has acknowledged: XTRIM MINID at the smallest of, over all
-- groups, the oldest pending entry (when something is pending) or the last delivered entry. An
-- entry at or after that id is kept, so nothing undelivered or unacknowledged is ever removed.
-- A stream without groups is not trimmed. Returns the number of entries removed.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local function parse(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local function less(a, b)
  local ams, aseq = parse(a)
  local bms, bseq = parse(b)
  return ams < bms or (ams == bms and aseq < bseq)
end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then
  return 0
end
local floor = nil
for _, group in ipairs(groups) do
  local name, pending, last = nil, 0, '0-0'
  for i = 1, #group, 2 do
    local field = group[i]
    if field == 'name' then
      name = group[i + 1]
    elseif field == 'pending' then
      pending = tonumber(group[i + 1])
    elseif field == 'last-delivered-id' then
      last = group[i + 1]
    end
  end
  local keep = last
  if pending > 0 then
    local summary = redis.call('XPENDING', KEYS[1], name)
    if summary[2] and less(summary[2], keep) then
      keep = summary[2]
    end
  end
  if floor == nil or less(keep, floor) then
    floor = keep
  end
end
if floor == '0-0' then
  return 0
end
return redis.call('XTRIM', KEYS[1], 'MINID', floor)
