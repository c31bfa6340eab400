-- Shared driver, appended to each algorithm file (sliding_log.lua, sliding_counter.lua,
-- gcra.lua, fixed_window.lua) to form one script per algorithm. KEYS and ARGV are described
-- at the top of those files. The algorithm file defines:
--   evaluate(key, limit, window, param, cost, now, min_ttl) -> state (state.allowed: boolean)
--   commit(key, state, now)                          (consume state.cost)
--   report(state, committed, now) -> remaining, reset_after_us, retry_after_us
--   flush()                                          (write what commit left pending)
-- Each algorithm reads a key at most once per call and keeps it in a table for the call's
-- later requests on it; commit changes that table and flush() writes every changed key once,
-- at the end (the script runs atomically, so nothing can tell the difference).
-- ARGV[2] picks the mode:
--   '1' check: all rules are evaluated first; only if every one allows is anything consumed.
--   '0' peek: evaluate and report, consume nothing.
--   '2' batch: KEYS are independent requests (coalesced by the client under load); ARGV[3] is
--       the number R of distinct rules, ARGV[4 .. 3 + 3R] their limit, window_us and param,
--       then one argument per request: (cost * R + rule index from 0), negated for a peek.
--       Each request is evaluated, charged if it fits and reported before the next, exactly
--       as if sent one after another at the same instant. The reply is the same as in the
--       other modes.

local now = tonumber(ARGV[1])
if now == nil or now <= 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local mode = ARGV[2]
-- Redis counts TTLs in real time. An injected clock (tests, simulations) may run slower than
-- real time, so its keys keep at least a minute to live rather than vanishing mid-run.
local min_ttl = 0
if tonumber(ARGV[1]) ~= nil and tonumber(ARGV[1]) > 0 then
  min_ttl = 60000
end

local floor, ceil = math.floor, math.ceil

if mode == '2' then
  local nrules = tonumber(ARGV[3])
  local rules = {}
  for r = 1, nrules do
    local a = 3 + (r - 1) * 3
    rules[r] = { tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]) }
  end
  local base = 3 + 3 * nrules
  local out = { now, 1, 0 }
  local n = 3
  -- A denial changes nothing, so until the next commit on its key an identical request (same
  -- key, rule and cost) at this same instant gets the very same answer: reuse it instead of
  -- evaluating again. This is what keeps a hot, over-limit key cheap.
  local denials = {}
  for i = 1, #KEYS do
    local key = KEYS[i]
    local code = ARGV[base + i]
    local seen = denials[key]
    if seen and seen[1] == code then
      out[n + 1] = 0
      out[n + 2] = seen[2]
      out[n + 3] = seen[3]
      out[n + 4] = seen[4]
    else
      local v = tonumber(code)
      local consume = v >= 0
      if not consume then
        v = -v
      end
      local r = v % nrules
      local rule = rules[r + 1]
      local s = evaluate(key, rule[1], rule[2], rule[3], (v - r) / nrules, now, min_ttl)
      local charge = s.allowed and consume
      if charge then
        commit(key, s, now)
        denials[key] = nil
      end
      local remaining, reset_after, retry_after = report(s, charge, now)
      remaining = remaining > 0 and floor(remaining) or 0
      reset_after = reset_after > 0 and ceil(reset_after) or 0
      retry_after = retry_after > 0 and ceil(retry_after) or 0
      if s.allowed then
        out[n + 1] = 1
      else
        out[n + 1] = 0
        denials[key] = { code, remaining, reset_after, retry_after }
      end
      out[n + 2] = remaining
      out[n + 3] = reset_after
      out[n + 4] = retry_after
    end
    n = n + 4
  end
  flush(now)
  return out
end

local consume = mode == '1'
local states = {}
local denied = 0
for i = 1, #KEYS do
  local a = 2 + (i - 1) * 4
  local s = evaluate(KEYS[i], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]),
    tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), now, min_ttl)
  states[i] = s
  if denied == 0 and not s.allowed then
    denied = i
  end
end

local commit_all = consume and denied == 0
local out = { now, denied == 0 and 1 or 0, denied }
for i = 1, #KEYS do
  local s = states[i]
  if commit_all then
    commit(KEYS[i], s, now)
  end
  local remaining, reset_after, retry_after = report(s, commit_all, now)
  out[#out + 1] = s.allowed and 1 or 0
  out[#out + 1] = math.max(0, floor(remaining))
  out[#out + 1] = math.max(0, ceil(reset_after))
  out[#out + 1] = math.max(0, ceil(retry_after))
end
flush(now)
return out
