-- GCRA (generic cell rate algorithm): a rate of limit per window with a burst, O(1) memory:
-- one string per key holding the theoretical arrival time (TAT) in microseconds.
-- KEYS[i]: the TAT string of rule i; all KEYS share one {hash tag}.
-- ARGV[1]: now in microseconds, or 0 to use Redis TIME.
-- ARGV[2]: 1 check (all rules or none), 0 peek, 2 batch: KEYS are independent requests
--          (coalesced by the client) and each has a fifth argument, 1 consume / 0 peek.
-- ARGV[2 + 4(i-1) + 1 .. +4]: limit, window_us, burst, cost of rule i.
-- Returns: { now_us, all_allowed, first_denied_index, then per rule: allowed, remaining,
--            reset_after_us, retry_after_us }.
-- Emission interval T = window / limit. A request of cost c is admitted iff
-- max(TAT, now) + c*T - burst*T <= now; then TAT := max(TAT, now) + c*T. Any interval of
-- length d admits at most burst + d/T units, and an idle key admits exactly burst at once.
--
-- Exact arithmetic: T is rarely a whole number of microseconds (3 per 3001 ms), and rounding
-- the TAT at every commit let the errors add up (an idle key then admitted burst - 1). So the
-- TAT is kept as whole microseconds plus a fraction, and every decision works on
-- D = (TAT - now) * limit, an integer: D + c*window <= burst*window decides, with no rounding.
-- (Exact while (burst + cost) * window_us < 2^53, i.e. any burst up to 1000 with windows up to
-- three months; beyond that, doubles round at one part in 2^53.)
-- The value is "<tat_us>" or "<tat_us>:<num>:<den>", TAT = tat_us + num/den microseconds,
-- den being the limit that wrote it; read under another limit, the fraction is rounded up,
-- so a changed limit never admits more.

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

local function evaluate(key, limit, window, burst, cost, now, min_ttl)
  local d = 0
  local ks = cache[key]
  if ks == nil then
    ks = { redis.call('GET', key) }
    cache[key] = ks
  end
  local v = ks[1]
  if v then
    local a = string.find(v, ':', 1, true)
    if a then
      local b = string.find(v, ':', a + 1, true)
      local num = tonumber(string.sub(v, a + 1, b - 1))
      local den = tonumber(string.sub(v, b + 1))
      if den ~= limit then
        num = math.ceil(num * limit / den)
      end
      d = (tonumber(string.sub(v, 1, a - 1)) - now) * limit + num
    else
      d = (tonumber(v) - now) * limit
    end
    if d < 0 then
      d = 0
    end
  end
  local new_d = d + cost * window
  local cap = burst * window
  return { limit = limit, window = window, cap = cap, d = d, new_d = new_d, min_ttl = min_ttl,
           allowed = new_d <= cap, ks = ks }
end

local function commit(key, s, now)
  local whole = math.floor(s.new_d / s.limit)
  local num = s.new_d - whole * s.limit
  local ks = s.ks
  if num > 0 then
    ks[1] = string.format('%.0f:%.0f:%.0f', now + whole, num, s.limit)
  else
    ks[1] = string.format('%.0f', now + whole)
  end
  if ks[2] == nil then
    dirty[#dirty + 1] = key
  end
  ks[2] = math.max(s.min_ttl, math.ceil(s.new_d / s.limit / 1000) + 1)
  s.d = s.new_d
end

local function report(s, _, now)
  -- Units that still fit right now, after this decision; the TAT is now + d/limit.
  local remaining = math.floor((s.cap - s.d) / s.window)
  local retry_after = 0
  if not s.allowed then
    retry_after = (s.new_d - s.cap) / s.limit
  end
  return remaining, s.d / s.limit, retry_after
end

local function flush()
  for i = 1, #dirty do
    local ks = cache[dirty[i]]
    redis.call('SET', dirty[i], ks[1], 'PX', fmt(ks[2]))
  end
end
