-- Sliding log: the exact limiter. One sorted set per key, one member per admission (whatever
-- its cost), scored by its Redis time in microseconds.
-- KEYS[i]: the sorted set of rule i; all KEYS share one {hash tag}.
-- ARGV[1]: now in microseconds, or 0 to use Redis TIME.
-- ARGV[2]: 1 check (all rules or none), 0 peek, 2 batch: KEYS are independent requests
--          (coalesced by the client) and each has a fifth argument, 1 consume / 0 peek.
-- ARGV[2 + 4(i-1) + 1 .. +4]: limit, window_us, unused (0), cost of rule i.
-- Returns: { now_us, all_allowed, first_denied_index, then per rule: allowed, remaining,
--            reset_after_us, retry_after_us }.
-- An entry at time s counts at time t iff t - window < s <= t.
--
-- Members are "s<seq>:<cum>:<cost>": seq numbers the admissions (16 digits, zero-padded, so
-- admissions in the same microsecond sort in the order they were made), cost is the
-- admission's units and cum the units admitted up to and including it (running total, from 0
-- whenever the key held nothing live). The units in the window are then cum(newest) minus the
-- units before the oldest live entry: two lookups, whatever the cost or the set's size.
--
-- Work per call is bounded: the first decision on a key in a call reads its newest and its
-- oldest live entry (later requests on the key in the same call, a coalesced batch, read
-- nothing: `now` is the same for all of them, so the oldest live entry does not move); a
-- denial's retry-after needs the entry where the (count + cost - limit)-th oldest unit lies,
-- found by binary search over the live entries by rank (at most log2(cost) lookups; none when
-- the oldest entry alone frees enough, as for cost-1 traffic). An admission adds one member;
-- the members a call admits on a key go out in one ZADD, then one PEXPIRE; when the
-- admissions cross a multiple of 8, at most 1024 expired members are evicted by rank first; a
-- key whose entries have all expired is unlinked (freed in the background when large). So the
-- set never holds more than `limit` members plus the expired ones not yet evicted.
--
-- State written by the earlier format (one member "<time>-<n>" per unit, no running total) is
-- read as cost-1 admissions: when the newest or the oldest live entry is in that format, the
-- live entries are counted with ZCOUNT; new admissions start their running total at the
-- transition, so legacy entries (all older) plus the new ones are counted exactly. Only an
-- old client still writing between new admissions (a rolling upgrade) is miscounted.
--
-- The running total is a double: exact up to 2^53 units admitted without the key ever being
-- idle for a window; past that a request is denied until the entries expire (never admitted
-- on an inexact count).

local MAX_CUM = 9007199254740992
local EVICT_EVERY = 8
local EVICT_MAX = 1024
local ZADD_CHUNK = 256
-- Per key read in this call: what the decisions need (see load), and the members admitted
-- but not yet written.
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

-- '(' .. fmt(x): the exclusive lower bound of the live entries, once per call.
local bounds = {}
local function since(x)
  local t = bounds[x]
  if t == nil then
    t = '(' .. fmt(x)
    bounds[x] = t
  end
  return t
end

-- seq, cum, cost of a member; nil for an entry in the earlier one-member-per-unit format.
local function parse(m)
  local seq, cum, cost = string.match(m, '^s(%d+):(%d+):(%d+)$')
  if seq then
    return tonumber(seq), tonumber(cum), tonumber(cost)
  end
  return nil
end

-- The key's state as of `now` for a window: count (units live), seq and cum of the newest
-- entry, base (units before the oldest live entry), nlive, the oldest live entry's time and
-- units, the newest entry's time.
local function load(key, window, now)
  local ks = { window = window, count = 0, nlive = 0, seq = 0, cum = 0, base = 0,
               exists = false, adds = {}, evict = false }
  -- Numbers as literals: redis.call would format them (as dear as in Lua).
  local newest = redis.call('ZRANGE', key, '-1', '-1', 'WITHSCORES')
  if newest[1] then
    ks.exists = true
    local seq, cum = parse(newest[1])
    ks.seq = seq or 0
    ks.newest_us = tonumber(newest[2])
    if ks.newest_us > now - window then
      local first = redis.call('ZRANGE', key, since(now - window), '+inf', 'BYSCORE', 'LIMIT',
        '0', '1', 'WITHSCORES')
      ks.first_us = tonumber(first[2])
      local fseq, fcum, fcost = parse(first[1])
      ks.cum = cum or 0
      if seq and fseq then
        ks.base = fcum - fcost
        ks.nlive = seq - fseq + 1
        ks.first_units = fcost
      else
        -- Earlier-format entries (one unit each) are live: they are the oldest live ones, and
        -- every newer-format entry (seq of them, cum units) came after them.
        local live = redis.call('ZCOUNT', key, since(now - window), '+inf')
        ks.base = -(live - ks.seq)
        ks.nlive = live
        ks.first_units = fcost or 1
      end
      ks.count = ks.cum - ks.base
    end
  end
  return ks
end

-- Write the members admitted on `key` so far: evict first when due, then one ZADD (in chunks)
-- and one PEXPIRE.
local function write(key, ks, now)
  local adds = ks.adds
  if #adds == 0 then
    return
  end
  if ks.evict then
    local expired = redis.call('ZCOUNT', key, '-inf', fmt(now - ks.window))
    if expired > 0 then
      redis.call('ZREMRANGEBYRANK', key, 0, math.min(expired, EVICT_MAX) - 1)
    end
    ks.evict = false
  end
  local i = 1
  while i <= #adds do
    local j = math.min(#adds, i + ZADD_CHUNK * 2 - 1)
    redis.call('ZADD', key, unpack(adds, i, j))
    i = j + 1
  end
  redis.call('PEXPIRE', key, fmt(ks.ttl))
  ks.adds = {}
end

local function evaluate(key, limit, window, _, cost, now, min_ttl)
  local ks = cache[key]
  if ks ~= nil and ks.window ~= window then
    -- The same key under another window (two rule definitions sharing a name): read afresh.
    write(key, ks, now)
    ks = nil
  end
  if ks == nil then
    ks = load(key, window, now)
    cache[key] = ks
  end
  local full = ks.count > 0 and ks.cum + cost > MAX_CUM
  return { ks = ks, key = key, limit = limit, window = window, cost = cost, min_ttl = min_ttl,
           count = ks.count, newest_us = ks.newest_us, full = full,
           allowed = ks.count + cost <= limit and not full }
end

local function commit(key, s, now)
  local ks = s.ks
  local seq, cum
  -- Entries stay in admission order by score: if the clock stepped back (a failover to a
  -- server with a slower clock, an injected clock), the new entry takes the newest one's time,
  -- so the newest by score is still the newest by seq and running total.
  local at = now
  if ks.newest_us and ks.newest_us > now then
    at = ks.newest_us
  end
  if ks.count == 0 then
    -- Nothing live: drop the expired entries at once, and start the running total afresh.
    if ks.exists then
      redis.call('UNLINK', key)
    end
    seq, cum = 1, s.cost
    ks.base, ks.nlive, ks.first_us, ks.first_units = 0, 0, at, s.cost
  else
    seq, cum = ks.seq + 1, ks.cum + s.cost
    if seq % EVICT_EVERY == 0 or ks.seq == 0 then
      ks.evict = true
    end
  end
  if #ks.adds == 0 and ks.ttl == nil then
    dirty[#dirty + 1] = key
  end
  local adds = ks.adds
  adds[#adds + 1] = fmt(at)
  adds[#adds + 1] = string.format('s%016.0f:%.0f:%.0f', seq, cum, s.cost)
  ks.ttl = math.max(s.min_ttl, math.ceil(s.window / 1000) + 1)
  ks.exists, ks.seq, ks.cum, ks.newest_us = true, seq, cum, at
  ks.nlive = ks.nlive + 1
  ks.count = ks.count + s.cost
  s.count = s.count + s.cost
end

-- Units from the oldest live entry through the live entry `j` (0 = the oldest), member `m`.
local function units_through(ks, m, j)
  local _, cum = parse(m)
  if cum then
    return cum - ks.base
  end
  return j + 1
end

-- The score of the live entry holding the `need`-th oldest live unit (1 <= need <= count).
local function score_of_unit(s, need, now)
  local ks = s.ks
  if ks.first_units >= need then
    return ks.first_us
  end
  -- Ranks are read from Redis: write what this call admitted on the key first.
  write(s.key, ks, now)
  -- Every entry holds at least one unit, so the answer lies within the first `need` entries;
  -- units_through(lo) < need <= units_through(hi). Live entry j has rank j - nlive.
  local lo, hi = 0, math.min(need - 1, ks.nlive - 1)
  local hi_us = nil
  if hi == ks.nlive - 1 then
    hi_us = ks.newest_us
  end
  while hi - lo > 1 do
    local mid = math.floor((lo + hi) / 2)
    local r = redis.call('ZRANGE', s.key, mid - ks.nlive, mid - ks.nlive, 'WITHSCORES')
    if units_through(ks, r[1], mid) >= need then
      hi, hi_us = mid, tonumber(r[2])
    else
      lo = mid
    end
  end
  if hi_us == nil then
    local r = redis.call('ZRANGE', s.key, hi - ks.nlive, hi - ks.nlive, 'WITHSCORES')
    hi_us = tonumber(r[2])
  end
  return hi_us
end

local function report(s, committed, now)
  local reset_after = 0
  if committed then
    -- The newest entry is the one just added.
    reset_after = s.window
  elseif s.count > 0 then
    reset_after = s.newest_us + s.window - now
  end
  local retry_after = 0
  if not s.allowed then
    if s.full then
      retry_after = reset_after
    else
      -- The oldest (count + cost - limit) units must leave the window first.
      retry_after = score_of_unit(s, s.count + s.cost - s.limit, now) + s.window - now
    end
  end
  return s.limit - s.count, reset_after, retry_after
end

local function flush(now)
  for i = 1, #dirty do
    write(dirty[i], cache[dirty[i]], now)
  end
end
