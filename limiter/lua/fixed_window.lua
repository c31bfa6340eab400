-- Fixed window, envoyproxy/ratelimit's way: windows aligned to multiples of the window since
-- the Unix epoch (a window of W µs starts at floor(now / W) * W), one counter per key.
-- KEYS[i]: the string of rule i; all KEYS share one {hash tag}.
-- ARGV[1]: now in microseconds, or 0 to use Redis TIME.
-- ARGV[2]: 1 check (all rules or none), 0 peek, 2 batch: KEYS are independent requests
--          (coalesced by the client) and each has a fifth argument, 1 consume / 0 peek.
-- ARGV[2 + 4(i-1) + 1 .. +4]: limit, window_us, unused (0), cost of rule i.
-- Returns: { now_us, all_allowed, first_denied_index, then per rule: allowed, remaining,
--            reset_after_us, retry_after_us }.
-- A request of cost c is admitted iff count + c <= limit, count being what the current
-- window admitted; remaining = limit - count after the decision; reset-after (and a denial's
-- retry-after) = the time to the window's end.
--
-- The value is "<end_us>:<count>": the end of the window the count belongs to, so a count
-- whose window has ended reads as 0 whatever the TTL (an injected clock may run slower than
-- real time). The count stands while its window's end is after the current window's start:
-- for an unchanged window that is exactly "the same window"; after the rule's window changed
-- (or Redis time stepped back) the old count is carried, never admitting more, until its end.
-- Work per call: one GET per key, plus one SET (with its TTL) per key that admitted, whatever
-- the cost or the number of requests on the key in the call (a coalesced batch).

-- Per key read in this call: { value, ttl_ms or nil }; a key with a ttl has a pending write.
local cache = {}
local dirty = {}
-- Making a number into a string is one of the dearest steps in Redis' Lua (microseconds, in
-- Lua or when redis.call converts a number argument), and most numbers a call writes recur
-- (the bucket index, the window's start, a TTL, small counts): each is formatted once per call.
local texts = {}
local function fmt(x)
  local t = texts[x]
  if t == nil then
    t = string.format('%.0f', x)
    texts[x] = t
  end
  return t
end

local function evaluate(key, limit, window, _, cost, now, min_ttl)
  local stop = now - now % window + window
  local count = 0
  local ks = cache[key]
  if ks == nil then
    ks = { redis.call('GET', key) }
    cache[key] = ks
  end
  local v = ks[1]
  if v then
    local a = string.find(v, ':', 1, true)
    local e = a and tonumber(string.sub(v, 1, a - 1))
    if e and e > stop - window then
      count = tonumber(string.sub(v, a + 1)) or 0
      if e > stop then
        stop = e
      end
    end
  end
  return { limit = limit, count = count, cost = cost, stop = stop, min_ttl = min_ttl,
           allowed = count + cost <= limit, ks = ks }
end

local function commit(key, s, now)
  s.count = s.count + s.cost
  local ks = s.ks
  -- Every key of one window shares its end's digits; counts repeat across keys.
  ks[1] = fmt(s.stop) .. ':' .. fmt(s.count)
  if ks[2] == nil then
    dirty[#dirty + 1] = key
  end
  ks[2] = math.max(s.min_ttl, math.ceil((s.stop - now) / 1000))
end

local function report(s, _, now)
  local retry_after = 0
  if not s.allowed then
    retry_after = s.stop - now
  end
  return s.limit - s.count, s.stop - now, retry_after
end

local function flush()
  for i = 1, #dirty do
    local ks = cache[dirty[i]]
    redis.call('SET', dirty[i], ks[1], 'PX', fmt(ks[2]))
  end
end
