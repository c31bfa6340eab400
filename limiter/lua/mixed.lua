-- The mixed script: one all-or-nothing check (or peek) whose rules use different algorithms.
-- limiter/src/script.rs assembles it at compile time: each algorithm file wrapped in a
-- function, so its local evaluate/commit/report land in ALG[<code>] (log, ctr, gcra, fw);
-- then this file; then the same driver.lua the one-algorithm scripts end with.
-- KEYS and ARGV are those of the one-algorithm scripts in check or peek mode (ARGV[1] now,
-- ARGV[2] mode, four arguments per rule: limit, window_us, param, cost), followed by one more
-- per rule: ARGV[2 + 4 * #KEYS + i], the algorithm code of rule i. (Batches, mode 2, go to
-- the one-algorithm scripts only: the client groups them by algorithm.)
-- The evaluate/commit/report below dispatch to the rule's algorithm: by key (a key names its
-- algorithm, so one key never has two), and, for report, through the state evaluate returned.

if ARGV[2] == '2' then
  return redis.error_reply('sluice limiter: the mixed script takes no batches')
end
local alg_of = {}
for i = 1, #KEYS do
  local code = ARGV[2 + 4 * #KEYS + i]
  local alg = ALG[code]
  if alg == nil then
    return redis.error_reply('sluice limiter: unknown algorithm code ' .. tostring(code))
  end
  alg_of[KEYS[i]] = alg
end

local function evaluate(key, limit, window, param, cost, now, min_ttl)
  local alg = alg_of[key]
  local s = alg.evaluate(key, limit, window, param, cost, now, min_ttl)
  s.alg_impl = alg
  return s
end

local function commit(key, s, now)
  s.alg_impl.commit(key, s, now)
end

local function report(s, committed, now)
  return s.alg_impl.report(s, committed, now)
end

local function flush(now)
  for _, alg in pairs(ALG) do
    alg.flush(now)
  end
end
