-- Sliding log: the exact limiter. One sorted set per key; one member per admitted unit of cost,
-- scored by its Redis time in microseconds.
-- KEYS[i]: the sorted set of rule i; all KEYS share one {hash tag}.
-- ARGV[1]: now in microseconds, or 0 to use Redis TIME.
-- ARGV[2]: 1 check (all rules or none), 0 peek, 2 batch: KEYS are independent requests
--          (coalesced by the client) and each has a fifth argument, 1 consume / 0 peek.
-- ARGV[2 + 4(i-1) + 1 .. +4]: limit, window_us, unused (0), cost of rule i.
-- Returns: { now_us, all_allowed, first_denied_index, then per rule: allowed, remaining,
--            reset_after_us, retry_after_us }.
-- An entry at time s counts at time t iff t - window < s <= t. Members are "<now>-<n>" where
-- n is the set's size plus the unit's position: while the clock stands still nothing expires,
-- so the size only grows and units admitted in the same microsecond stay distinct.

-- Work per call: a denied request reads only (ZCOUNT of the live entries, then the two ranks
-- report() needs); an admitted one also evicts the expired entries before adding its own, so the
-- set never holds more than the live entries plus what expired since the last admission.

local function evaluate(key, limit, window, _, cost, now, min_ttl)
  local count = redis.call('ZCOUNT', key, string.format('(%.0f', now - window), '+inf')
  return { key = key, limit = limit, window = window, cost = cost, count = count, min_ttl = min_ttl,
           allowed = count + cost <= limit }
end

local function commit(key, s, now)
  -- After this the set holds exactly the s.count live entries.
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - s.window)
  local args = {}
  for j = 1, s.cost do
    args[#args + 1] = now
    args[#args + 1] = string.format('%.0f-%d', now, s.count + j)
  end
  redis.call('ZADD', key, unpack(args))
  redis.call('PEXPIRE', key, math.max(s.min_ttl, math.ceil(s.window / 1000) + 1))
  s.count = s.count + s.cost
end

-- The score of the live entry at `rank` (0 = the oldest still in the window).
local function live_score_at(s, rank, now)
  local r = redis.call('ZRANGE', s.key, string.format('(%.0f', now - s.window), '+inf', 'BYSCORE',
    'LIMIT', rank, 1, 'WITHSCORES')
  return tonumber(r[2])
end

local function report(s, committed, now)
  local reset_after = 0
  if committed then
    -- The newest entry is the one just added.
    reset_after = s.window
  elseif s.count > 0 then
    -- The newest entry is live whenever any is.
    local r = redis.call('ZRANGE', s.key, -1, -1, 'WITHSCORES')
    reset_after = tonumber(r[2]) + s.window - now
  end
  local retry_after = 0
  if not s.allowed then
    -- The oldest (count + cost - limit) units must leave the window first.
    retry_after = live_score_at(s, s.count + s.cost - s.limit - 1, now) + s.window - now
  end
  return s.limit - s.count, reset_after, retry_after
end
