-- Shared driver, appended to each algorithm file (sliding_log.lua, sliding_counter.lua,
-- gcra.lua) to form one script per algorithm. KEYS and ARGV are described at the top of
-- those files. The algorithm file defines:
--   evaluate(key, limit, window, param, cost, now, min_ttl) -> state (state.allowed: boolean)
--   commit(key, state, now)                          (consume state.cost)
--   report(state, committed, now) -> remaining, reset_after_us, retry_after_us
-- ARGV[2] picks the mode:
--   '1' check: all rules are evaluated first; only if every one allows is anything consumed.
--   '0' peek: evaluate and report, consume nothing.
--   '2' batch: KEYS are independent requests (coalesced by the client under load), each with a
--       fifth argument (1 consume / 0 peek); each is evaluated, charged if it fits and reported
--       before the next, exactly as if sent one after another at the same instant.

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

local function push(out, s, remaining, reset_after, retry_after)
  out[#out + 1] = s.allowed and 1 or 0
  out[#out + 1] = math.max(0, math.floor(remaining))
  out[#out + 1] = math.max(0, math.ceil(reset_after))
  out[#out + 1] = math.max(0, math.ceil(retry_after))
end

if mode == '2' then
  local out = { now, 1, 0 }
  -- A denial changes nothing, so until the next commit an identical request (same key, same
  -- rule arguments) at this same instant gets the very same answer: reuse it instead of
  -- evaluating again. This is what keeps a hot, over-limit key cheap.
  local denials = {}
  for i = 1, #KEYS do
    local a = 2 + (i - 1) * 5
    local sig = KEYS[i] .. '|' .. ARGV[a + 1] .. '|' .. ARGV[a + 2] .. '|' .. ARGV[a + 3] .. '|'
      .. ARGV[a + 4]
    local seen = denials[sig]
    if seen then
      out[#out + 1] = 0
      out[#out + 1] = seen[1]
      out[#out + 1] = seen[2]
      out[#out + 1] = seen[3]
    else
      local s = evaluate(KEYS[i], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]),
        tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), now, min_ttl)
      local charge = s.allowed and ARGV[a + 5] == '1'
      if charge then
        commit(KEYS[i], s, now)
        denials = {}
      end
      local at = #out
      push(out, s, report(s, charge, now))
      if not s.allowed then
        denials[sig] = { out[at + 2], out[at + 3], out[at + 4] }
      end
    end
  end
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
  push(out, s, report(s, commit_all, now))
end
return out
