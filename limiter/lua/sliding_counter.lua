-- Sliding-window counter with N = window / granularity sub-buckets, all in one hash per key.
-- KEYS[i]: the hash of rule i; all KEYS share one {hash tag}.
-- ARGV[1]: now in microseconds, or 0 to use Redis TIME.
-- ARGV[2]: 1 check (all rules or none), 0 peek, 2 batch: KEYS are independent requests
--          (coalesced by the client) and each has a fifth argument, 1 consume / 0 peek.
-- ARGV[2 + 4(i-1) + 1 .. +4]: limit, window_us, granularity_us, cost of rule i.
-- Returns: { now_us, all_allowed, first_denied_index, then per rule: allowed, remaining,
--            reset_after_us, retry_after_us }.
-- Hash fields: "<bucket index>" -> units admitted in that bucket; "t" total of the kept
-- buckets; "o" oldest kept bucket holding units; "l" newest written index; "g" granularity
-- they were cut with.
-- Bucket b = floor(now / g) covers [b*g, (b+1)*g). The estimate for the window (now - W, now]
-- counts buckets b-N+1 .. b fully and bucket b-N (which straddles the window's start) by the
-- fraction of it still inside: t - c[b-N] * phi, phi = (now mod g) / g. N = 1 is the classic
-- two-window weighting. docs/LIMITER.md derives the worst-case over-admission.
-- Work per call is bounded by N (evicting buckets that left the window), never by traffic or
-- cost; N is at most MAX_BUCKETS (2,000), so the longest walk reads 2,000 fields. A key is
-- read once per call (HMGET) whatever the number of requests on it (a coalesced batch), and
-- written once at the end if anything was admitted (one HSET, one PEXPIRE).

local CHUNK = 512
-- Per key read in this call: its state for the rule's window and granularity (see load).
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

-- HMGET the buckets first..last (bounded by N) in chunks growing from 4 to CHUNK, so a walk
-- that stops early reads little; calls f(index, count) until it returns true.
local function each_bucket(key, first, last, f)
  local i = first
  local size = 4
  while i <= last do
    local j = math.min(last, i + size - 1)
    size = math.min(CHUNK, size * 2)
    local fields = {}
    for k = i, j do
      fields[#fields + 1] = fmt(k)
    end
    local counts = redis.call('HMGET', key, unpack(fields))
    for k = i, j do
      if f(k, tonumber(counts[k - i + 1]) or 0) then
        return
      end
    end
    i = j + 1
  end
end

-- HDEL the given bucket fields, CHUNK at a time.
local function evict(key, fields)
  local i = 1
  while i <= #fields do
    local j = math.min(#fields, i + CHUNK - 1)
    redis.call('HDEL', key, unpack(fields, i, j))
    i = j + 1
  end
end

-- The key's state at `now`: buckets that left the window evicted, total, oldest bucket holding
-- units (first), newest written (last), the straddling bucket's count (c_old) and the current
-- bucket's (c_now).
local function load(key, window, gran, now, min_ttl)
  local n = window / gran
  local phase = now % gran
  local b = (now - phase) / gran
  local old = b - n
  local f = redis.call('HMGET', key, 't', 'o', 'l', 'g', fmt(old), fmt(b))
  local total = tonumber(f[1]) or 0
  local first = tonumber(f[2])
  local last = tonumber(f[3])
  local g = tonumber(f[4])
  local c_old = tonumber(f[5]) or 0
  -- The current bucket's count, so the write at the end sets absolute values in one HSET.
  local c_now = tonumber(f[6]) or 0
  if last ~= nil and g ~= gran then
    -- The rule's granularity changed: bucket indices mean something else now. Carry the
    -- whole kept total into the current bucket: it can only over-count, never lose admissions.
    redis.call('DEL', key)
    if total > 0 then
      redis.call('HSET', key, fmt(b), fmt(total), 't', fmt(total), 'o', fmt(b), 'l', fmt(b), 'g',
        fmt(gran))
      redis.call('PEXPIRE', key, fmt(math.max(min_ttl, math.ceil((window + gran) / 1000) + 1)))
      first, last, c_old, c_now = b, b, 0, total
    else
      first, last, c_now = nil, nil, 0
    end
  elseif last ~= nil then
    if last < old then
      -- Every bucket left the window.
      redis.call('DEL', key)
      total, first, last, c_old, c_now = 0, nil, nil, 0, 0
    elseif first < old then
      local gone = 0
      local fields = {}
      each_bucket(key, first, old - 1, function(k, c)
        if c > 0 then
          gone = gone + c
          fields[#fields + 1] = fmt(k)
        end
      end)
      evict(key, fields)
      total = total - gone
      if total <= 0 then
        redis.call('DEL', key)
        total, first, last, c_old, c_now = 0, nil, nil, 0, 0
      else
        -- Keep "o" on the oldest bucket that holds units, so a denial's retry walk starts on
        -- one (this scan runs once per bucket that leaves, not once per request).
        each_bucket(key, old, last, function(k, c)
          if c > 0 then
            first = k
            return true
          end
          return false
        end)
        redis.call('HSET', key, 't', fmt(total), 'o', fmt(first))
      end
    end
  end
  return { window = window, gran = gran, n = n, b = b, phi = phase / gran, old = old,
           total = total, first = first, last = last, c_old = c_old, c_now = c_now }
end

local function evaluate(key, limit, window, gran, cost, now, min_ttl)
  local ks = cache[key]
  if ks ~= nil and (ks.window ~= window or ks.gran ~= gran) then
    -- The same key under another rule definition (two rules sharing a name): write what is
    -- pending and read afresh.
    if ks.ttl then
      redis.call('HSET', key, fmt(ks.b), fmt(ks.c_now), 't', fmt(ks.total), 'o', fmt(ks.first),
        'l', fmt(ks.b), 'g', fmt(ks.gran))
      redis.call('PEXPIRE', key, fmt(ks.ttl))
      ks.ttl = nil
    end
    ks = nil
  end
  if ks == nil then
    ks = load(key, window, gran, now, min_ttl)
    cache[key] = ks
  end
  local estimate = ks.total - ks.c_old * ks.phi
  return { ks = ks, min_ttl = min_ttl, limit = limit, gran = gran, n = ks.n, b = ks.b,
           phi = ks.phi, old = ks.old, cost = cost, total = ks.total, first = ks.first,
           last = ks.last, c_old = ks.c_old, estimate = estimate,
           allowed = estimate + cost <= limit + 1e-9, key = key }
end

local function commit(key, s, now)
  local ks = s.ks
  if ks.first == nil then
    ks.first = ks.b
  end
  ks.c_now = ks.c_now + s.cost
  ks.total = ks.total + s.cost
  ks.last = ks.b
  if ks.ttl == nil then
    dirty[#dirty + 1] = key
  end
  ks.ttl = math.max(s.min_ttl, math.ceil((s.n * s.gran + s.gran) / 1000) + 1)
  s.first = ks.first
  s.total = s.total + s.cost
  s.estimate = s.estimate + s.cost
  s.last = s.b
end

local function report(s, _, now)
  local reset_after = 0
  if s.last ~= nil and s.total > 0 then
    reset_after = (s.last + s.n + 1) * s.gran - now
  end
  local retry_after = 0
  if not s.allowed and s.last ~= nil then
    -- Walk forward in time (no new traffic assumed): during the rest of bucket b the straddling
    -- bucket b-N fades out linearly; during each later bucket k+N, bucket k fades out.
    local need = s.estimate + s.cost - s.limit
    local avail = s.c_old * (1 - s.phi)
    if need <= avail + 1e-9 then
      retry_after = need / s.c_old * s.gran
    else
      need = need - avail
      -- Buckets older than the oldest kept one don't exist: start the walk there.
      local start = math.max(s.old + 1, s.first)
      local t = (1 - s.phi) * s.gran + (start - s.old - 1) * s.gran
      retry_after = reset_after
      -- The current bucket may hold units this call admitted and has not written yet.
      local ks = s.ks
      each_bucket(s.key, start, s.last, function(k, c)
        if k == ks.b then
          c = ks.c_now
        end
        if c > 0 and need <= c + 1e-9 then
          retry_after = t + need / c * s.gran
          return true
        end
        need = need - c
        t = t + s.gran
        return false
      end)
    end
  end
  return s.limit - s.estimate + 1e-9, reset_after, retry_after
end

local function flush()
  for i = 1, #dirty do
    local key = dirty[i]
    local ks = cache[key]
    if ks.ttl then
      redis.call('HSET', key, fmt(ks.b), fmt(ks.c_now), 't', fmt(ks.total), 'o', fmt(ks.first),
        'l', fmt(ks.b), 'g', fmt(ks.gran))
      redis.call('PEXPIRE', key, fmt(ks.ttl))
    end
  end
end
