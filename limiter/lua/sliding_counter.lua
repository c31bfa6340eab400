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
-- cost; N is at most MAX_BUCKETS (2,000), so the longest walk reads 2,000 fields.

local CHUNK = 512
-- Units committed per key during this call (a key listed twice in one call).
local committed = {}

local function fmt(i)
  return string.format('%.0f', i)
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

local function evaluate(key, limit, window, gran, cost, now, min_ttl)
  -- A fresh read: whatever this call committed to the key before is in what HMGET returns.
  committed[key] = nil
  local n = window / gran
  local phase = now % gran
  local b = (now - phase) / gran
  local phi = phase / gran
  local old = b - n
  local f = redis.call('HMGET', key, 't', 'o', 'l', 'g', fmt(old), fmt(b))
  local total = tonumber(f[1]) or 0
  local first = tonumber(f[2])
  local last = tonumber(f[3])
  local g = tonumber(f[4])
  local c_old = tonumber(f[5]) or 0
  -- The current bucket's count, so commit() writes absolute values in one HSET.
  local c_now = tonumber(f[6]) or 0
  if last ~= nil and g ~= gran then
    -- The rule's granularity changed: bucket indices mean something else now. Carry the
    -- whole kept total into the current bucket: it can only over-count, never lose admissions.
    redis.call('DEL', key)
    if total > 0 then
      redis.call('HSET', key, fmt(b), total, 't', total, 'o', fmt(b), 'l', fmt(b), 'g', gran)
      redis.call('PEXPIRE', key, math.max(min_ttl, math.ceil((window + gran) / 1000) + 1))
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
        redis.call('HSET', key, 't', total, 'o', fmt(first))
      end
    end
  end
  local estimate = total - c_old * phi
  return { min_ttl = min_ttl, limit = limit, gran = gran, n = n, b = b, phi = phi, old = old, cost = cost,
           total = total, first = first, last = last, c_old = c_old, c_now = c_now, estimate = estimate,
           allowed = estimate + cost <= limit + 1e-9, key = key }
end

local function commit(key, s, now)
  if s.first == nil then
    s.first = s.b
  end
  -- One write of absolute values (the script runs atomically, so this equals HINCRBY), plus
  -- what earlier rules of this same call already added to the same key.
  local before = committed[key] or 0
  committed[key] = before + s.cost
  redis.call('HSET', key, fmt(s.b), fmt(s.c_now + before + s.cost), 't',
    fmt(s.total + before + s.cost), 'o', fmt(s.first), 'l', fmt(s.b), 'g', s.gran)
  redis.call('PEXPIRE', key, math.max(s.min_ttl, math.ceil((s.n * s.gran + s.gran) / 1000) + 1))
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
      each_bucket(s.key, start, s.last, function(_, c)
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
