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
-- Work per call is bounded: a decision reads the newest and the oldest live entry; a denial's
-- retry-after needs the entry where the (count + cost - limit)-th oldest unit lies, found by
-- binary search over the live entries by rank (at most log2(cost) lookups; none when the
-- oldest entry alone frees enough, as for cost-1 traffic). An admission adds one member and,
-- every 8th admission, evicts at most 1024 expired members by rank; a key whose entries have
-- all expired is unlinked (freed in the background when large). So the set never holds more
-- than `limit` members plus the expired ones not yet evicted.
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
-- Last member written per key during this call (a key listed twice in one check).
local written = {}

local function fmt(x)
  return string.format('%.0f', x)
end

-- seq, cum, cost of a member; nil for an entry in the earlier one-member-per-unit format.
local function parse(m)
  local seq, cum, cost = string.match(m, '^s(%d+):(%d+):(%d+)$')
  if seq then
    return tonumber(seq), tonumber(cum), tonumber(cost)
  end
  return nil
end

local function evaluate(key, limit, window, _, cost, now, min_ttl)
  written[key] = nil
  local s = { key = key, limit = limit, window = window, cost = cost, min_ttl = min_ttl,
              count = 0, nlive = 0, seq = 0, cum = 0, base = 0, exists = false }
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if newest[1] then
    s.exists = true
    local seq, cum = parse(newest[1])
    s.seq = seq or 0
    s.newest_us = tonumber(newest[2])
    if s.newest_us > now - window then
      local first = redis.call('ZRANGE', key, '(' .. fmt(now - window), '+inf', 'BYSCORE', 'LIMIT',
        0, 1, 'WITHSCORES')
      s.first_us = tonumber(first[2])
      local fseq, fcum, fcost = parse(first[1])
      s.cum = cum or 0
      if seq and fseq then
        s.base = fcum - fcost
        s.nlive = seq - fseq + 1
        s.first_units = fcost
      else
        -- Earlier-format entries (one unit each) are live: they are the oldest live ones, and
        -- every newer-format entry (seq of them, cum units) came after them.
        local live = redis.call('ZCOUNT', key, '(' .. fmt(now - window), '+inf')
        s.base = -(live - s.seq)
        s.nlive = live
        s.first_units = fcost or 1
      end
      s.count = s.cum - s.base
    end
  end
  s.full = s.count > 0 and s.cum + cost > MAX_CUM
  s.allowed = s.count + cost <= limit and not s.full
  return s
end

local function commit(key, s, now)
  local seq, cum
  local last = written[key]
  if last then
    seq, cum = last[1] + 1, last[2] + s.cost
  elseif s.count == 0 then
    -- Nothing live: drop the expired entries at once, and start the running total afresh.
    if s.exists then
      redis.call('UNLINK', key)
    end
    seq, cum = 1, s.cost
  else
    seq, cum = s.seq + 1, s.cum + s.cost
    if seq % EVICT_EVERY == 0 or s.seq == 0 then
      local expired = redis.call('ZCOUNT', key, '-inf', fmt(now - s.window))
      if expired > 0 then
        redis.call('ZREMRANGEBYRANK', key, 0, math.min(expired, EVICT_MAX) - 1)
      end
    end
  end
  written[key] = { seq, cum }
  -- Entries stay in admission order by score: if the clock stepped back (a failover to a
  -- server with a slower clock, an injected clock), the new entry takes the newest one's time,
  -- so the newest by score is still the newest by seq and running total.
  local at = now
  if s.newest_us and s.newest_us > now then
    at = s.newest_us
  end
  redis.call('ZADD', key, at, string.format('s%016.0f:%.0f:%.0f', seq, cum, s.cost))
  redis.call('PEXPIRE', key, math.max(s.min_ttl, math.ceil(s.window / 1000) + 1))
  s.count = s.count + s.cost
end

-- Units from the oldest live entry through the live entry `j` (0 = the oldest), member `m`.
local function units_through(s, m, j)
  local _, cum = parse(m)
  if cum then
    return cum - s.base
  end
  return j + 1
end

-- The score of the live entry holding the `need`-th oldest live unit (1 <= need <= count).
local function score_of_unit(s, need)
  if s.first_units >= need then
    return s.first_us
  end
  -- Every entry holds at least one unit, so the answer lies within the first `need` entries;
  -- units_through(lo) < need <= units_through(hi). Live entry j has rank j - nlive.
  local lo, hi = 0, math.min(need - 1, s.nlive - 1)
  local hi_us = nil
  if hi == s.nlive - 1 then
    hi_us = s.newest_us
  end
  while hi - lo > 1 do
    local mid = math.floor((lo + hi) / 2)
    local r = redis.call('ZRANGE', s.key, mid - s.nlive, mid - s.nlive, 'WITHSCORES')
    if units_through(s, r[1], mid) >= need then
      hi, hi_us = mid, tonumber(r[2])
    else
      lo = mid
    end
  end
  if hi_us == nil then
    local r = redis.call('ZRANGE', s.key, hi - s.nlive, hi - s.nlive, 'WITHSCORES')
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
      retry_after = score_of_unit(s, s.count + s.cost - s.limit) + s.window - now
    end
  end
  return s.limit - s.count, reset_after, retry_after
end
