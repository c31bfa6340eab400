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
-- max(TAT, now) + c*T - burst*T <= now; then TAT := max(TAT, now) + c*T (rounded up to a
-- whole microsecond, so rounding never admits more). Any interval of length d admits at most
-- burst + d/T units.

local function evaluate(key, limit, window, burst, cost, now, min_ttl)
  local interval = window / limit
  local tat = tonumber(redis.call('GET', key) or 0)
  if tat < now then
    tat = now
  end
  local new_tat = math.ceil(tat + cost * interval)
  local allow_at = new_tat - burst * interval
  return { interval = interval, burst = burst, tat = tat, new_tat = new_tat, min_ttl = min_ttl,
           allowed = allow_at <= now, allow_at = allow_at }
end

local function commit(key, s, now)
  redis.call('SET', key, string.format('%.0f', s.new_tat), 'PX',
    math.max(s.min_ttl, math.ceil((s.new_tat - now) / 1000) + 1))
  s.tat = s.new_tat
end

local function report(s, _, now)
  -- Units that still fit right now, after this decision.
  local remaining = (now - (s.tat - s.burst * s.interval)) / s.interval + 1e-9
  local retry_after = 0
  if not s.allowed then
    retry_after = s.allow_at - now
  end
  return remaining, s.tat - now, retry_after
end
