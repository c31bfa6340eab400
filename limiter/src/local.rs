//! The in-process limiter: the same four algorithms as the Lua scripts, over process memory.
//!
//! It answers when Redis is unavailable and the policy is [`crate::OutagePolicy::Local`]. Each
//! process then limits on its own, so a fleet of P processes admits up to P times the limit
//! while Redis is away: the documented price of staying up. It mirrors the scripts step for
//! step (same bucket arithmetic, same rounding), and the test suite runs both on one injected
//! clock and compares their answers.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Mutex,
};

use crate::{algorithm::Algorithm, decision::Answer, rule::Rule};

/// One key's state, one variant per algorithm.
#[derive(Debug)]
enum State {
    /// One entry per admission, `(time, units admitted through it)`, and the units admitted
    /// through the last entry that left; the units in the window are their difference (the
    /// script keeps the same running total in its members).
    Log {
        entries: VecDeque<(u64, u64)>,
        evicted: u64,
    },
    Counter {
        gran: u64,
        buckets: BTreeMap<u64, u64>,
        total: u64,
    },
    /// The theoretical arrival time as an exact fraction: `tat / den` microseconds, `den`
    /// being the limit that wrote it (the script keeps whole µs plus `num/den`).
    Gcra { tat: u128, den: u64 },
    /// The end of the window the count belongs to, and the count (the script's
    /// `"<end>:<count>"`).
    Fixed { end: u64, count: u64 },
}

impl State {
    /// Fresh state for `rule`.
    fn new(rule: &Rule) -> Self {
        match rule.algorithm() {
            Algorithm::SlidingLog => State::Log {
                entries: VecDeque::new(),
                evicted: 0,
            },
            Algorithm::SlidingCounter => State::Counter {
                gran: rule.param(),
                buckets: BTreeMap::new(),
                total: 0,
            },
            Algorithm::Gcra => State::Gcra { tat: 0, den: 1 },
            Algorithm::FixedWindow => State::Fixed { end: 0, count: 0 },
        }
    }

    /// The algorithm this state belongs to.
    fn algorithm(&self) -> Algorithm {
        match self {
            State::Log { .. } => Algorithm::SlidingLog,
            State::Counter { .. } => Algorithm::SlidingCounter,
            State::Gcra { .. } => Algorithm::Gcra,
            State::Fixed { .. } => Algorithm::FixedWindow,
        }
    }
}

#[derive(Debug)]
struct Entry {
    state: State,
    expires_at: u64,
}

/// Keyed in-process state. Expired entries are swept whenever the map doubles past its last
/// sweep size, so memory follows the number of live keys.
#[derive(Debug, Default)]
pub(crate) struct LocalLimiter {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Vec<u8>, Entry>,
    sweep_at: usize,
}

/// A request against one rule and key.
pub(crate) struct Item<'a> {
    pub(crate) key: &'a [u8],
    pub(crate) rule: &'a Rule,
    pub(crate) cost: u64,
}

impl LocalLimiter {
    /// Evaluate all items at `now_us`; if every one allows and `consume`, charge them all.
    /// Returns (all allowed, per-item answers).
    pub(crate) fn decide(
        &self,
        items: &[Item<'_>],
        now_us: u64,
        consume: bool,
    ) -> (bool, Vec<Answer>) {
        let mut inner = match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let inner = &mut *inner;
        if inner.entries.len() >= inner.sweep_at.max(1024) {
            inner.entries.retain(|_, e| e.expires_at > now_us);
            inner.sweep_at = inner.entries.len() * 2;
        }
        let mut all = true;
        for item in items {
            let entry = entry_for(&mut inner.entries, item, now_us);
            all &= evaluate(&mut entry.state, item.rule, item.cost, now_us).allowed;
        }
        let commit = all && consume;
        let answers = items
            .iter()
            .map(|item| {
                let entry = entry_for(&mut inner.entries, item, now_us);
                let mut eval = evaluate(&mut entry.state, item.rule, item.cost, now_us);
                if commit {
                    entry.expires_at = commit_eval(&mut entry.state, item.rule, &mut eval, now_us);
                }
                report(&entry.state, item.rule, &eval, now_us)
            })
            .collect();
        (all, answers)
    }

    /// Forget a key.
    pub(crate) fn reset(&self, key: &[u8]) {
        let mut inner = match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        inner.entries.remove(key);
    }
}

fn entry_for<'m>(
    entries: &'m mut HashMap<Vec<u8>, Entry>,
    item: &Item<'_>,
    now: u64,
) -> &'m mut Entry {
    let entry = entries.entry(item.key.to_vec()).or_insert_with(|| Entry {
        state: State::new(item.rule),
        expires_at: now,
    });
    if entry.state.algorithm() != item.rule.algorithm() {
        entry.state = State::new(item.rule);
    }
    entry
}

struct Eval {
    allowed: bool,
    cost: u64,
    count: u64,
    estimate: f64,
    c_old: f64,
    phi: f64,
    /// GCRA, in µs × limit: the TAT ahead of now before and after this request, and the
    /// most it may be ahead (burst × window).
    d: u128,
    new_d: u128,
    cap: u128,
    /// Fixed window: the end of the window the count belongs to.
    end: u64,
}

fn evaluate(state: &mut State, rule: &Rule, cost: u64, now: u64) -> Eval {
    let limit = rule.limit();
    let window = rule.window_us();
    let mut eval = Eval {
        allowed: false,
        cost,
        count: 0,
        estimate: 0.0,
        c_old: 0.0,
        phi: 0.0,
        d: 0,
        new_d: 0,
        cap: 0,
        end: 0,
    };
    match state {
        State::Log { entries, evicted } => {
            let cutoff = now.saturating_sub(window);
            while let Some(&(t, cum)) = entries.front() {
                if t > cutoff {
                    break;
                }
                *evicted = cum;
                entries.pop_front();
            }
            eval.count = entries.back().map_or(0, |&(_, cum)| cum - *evicted);
            eval.allowed = eval.count + cost <= limit;
        }
        State::Counter {
            gran,
            buckets,
            total,
        } => {
            let g = rule.param();
            let n = window / g;
            let b = now / g;
            if *gran != g {
                // Granularity changed: carry the kept total into the current bucket, as the
                // script does.
                buckets.clear();
                if *total > 0 {
                    buckets.insert(b, *total);
                }
                *gran = g;
            }
            let old = b.saturating_sub(n);
            let kept = buckets.split_off(&old);
            let gone: u64 = buckets.values().sum();
            *buckets = kept;
            *total -= gone;
            eval.phi = (now % g) as f64 / g as f64;
            eval.c_old = if b >= n {
                buckets.get(&old).copied().unwrap_or(0) as f64
            } else {
                0.0
            };
            eval.estimate = *total as f64 - eval.c_old * eval.phi;
            eval.allowed = eval.estimate + cost as f64 <= limit as f64 + 1e-9;
        }
        State::Gcra { tat, den } => {
            let limit = u128::from(limit);
            // Read under another limit, the fraction rounds up, as in the script.
            let tat_l = if u128::from(*den) == limit {
                *tat
            } else {
                (*tat * limit).div_ceil(u128::from(*den))
            };
            eval.d = tat_l.saturating_sub(u128::from(now) * limit);
            eval.new_d = eval.d + u128::from(cost) * u128::from(window);
            eval.cap = u128::from(rule.param()) * u128::from(window);
            eval.allowed = eval.new_d <= eval.cap;
        }
        State::Fixed { end, count } => {
            // As the script: the count stands while its window's end is after the current
            // window's start.
            let start = now - now % window;
            eval.end = start + window;
            if *end > start {
                eval.count = *count;
                eval.end = eval.end.max(*end);
            }
            eval.allowed = eval.count + cost <= limit;
        }
    }
    eval
}

/// Charge the evaluated cost; returns the time the state expires.
fn commit_eval(state: &mut State, rule: &Rule, eval: &mut Eval, now: u64) -> u64 {
    match state {
        State::Log { entries, evicted } => {
            let (newest, cum) = entries.back().copied().unwrap_or((now, *evicted));
            // As the script: a clock that stepped back keeps entries in admission order.
            let at = now.max(newest);
            entries.push_back((at, cum + eval.cost));
            eval.count += eval.cost;
            at + rule.window_us()
        }
        State::Counter {
            gran,
            buckets,
            total,
        } => {
            *buckets.entry(now / *gran).or_insert(0) += eval.cost;
            *total += eval.cost;
            eval.estimate += eval.cost as f64;
            now + rule.window_us() + *gran
        }
        State::Gcra { tat, den } => {
            let limit = u128::from(rule.limit());
            *tat = u128::from(now) * limit + eval.new_d;
            *den = rule.limit();
            eval.d = eval.new_d;
            now.saturating_add(u64::try_from(eval.new_d.div_ceil(limit)).unwrap_or(u64::MAX))
        }
        State::Fixed { end, count } => {
            eval.count += eval.cost;
            *count = eval.count;
            *end = eval.end;
            eval.end
        }
    }
}

fn clamp(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 {
        x as u64
    } else {
        0
    }
}

fn report(state: &State, rule: &Rule, eval: &Eval, now: u64) -> Answer {
    let limit = rule.limit() as f64;
    let window = rule.window_us() as f64;
    let now_f = now as f64;
    match state {
        State::Log { entries, evicted } => {
            let reset = entries
                .back()
                .map_or(0.0, |&(t, _)| t as f64 + window - now_f);
            let retry = if eval.allowed {
                0.0
            } else {
                // The entry holding the (count + cost - limit)-th oldest unit must leave.
                let need = eval.count + eval.cost - rule.limit();
                let at = entries.partition_point(|&(_, cum)| cum - evicted < need);
                entries
                    .get(at)
                    .map_or(0.0, |&(t, _)| t as f64 + window - now_f)
            };
            Answer {
                allowed: eval.allowed,
                remaining: clamp((limit - eval.count as f64).floor()),
                reset_after_us: clamp(reset.ceil()),
                retry_after_us: clamp(retry.ceil()),
            }
        }
        State::Counter {
            gran,
            buckets,
            total,
        } => {
            let g = *gran as f64;
            let n = rule.window_us() / *gran;
            let last = buckets.keys().next_back().copied();
            let reset = match last {
                Some(last) if *total > 0 => (last + n + 1) as f64 * g - now_f,
                _ => 0.0,
            };
            let mut retry = 0.0;
            if !eval.allowed {
                let mut need = eval.estimate + eval.cost as f64 - limit;
                let avail = eval.c_old * (1.0 - eval.phi);
                if need <= avail + 1e-9 {
                    retry = need / eval.c_old * g;
                } else {
                    need -= avail;
                    retry = reset;
                    // Same walk, same float steps as the script.
                    let old = (now / *gran).saturating_sub(n);
                    let first = buckets.keys().next().copied().unwrap_or(old + 1);
                    let start = (old + 1).max(first);
                    let mut t = (1.0 - eval.phi) * g + (start - old - 1) as f64 * g;
                    if let Some(last) = last {
                        for k in start..=last {
                            let c = buckets.get(&k).copied().unwrap_or(0) as f64;
                            if c > 0.0 && need <= c + 1e-9 {
                                retry = t + need / c * g;
                                break;
                            }
                            need -= c;
                            t += g;
                        }
                    }
                }
            }
            Answer {
                allowed: eval.allowed,
                remaining: clamp((limit - eval.estimate + 1e-9).floor()),
                reset_after_us: clamp(reset.ceil()),
                retry_after_us: clamp(retry.ceil()),
            }
        }
        State::Gcra { .. } => {
            let limit = u128::from(rule.limit());
            let whole = |x: u128| u64::try_from(x).unwrap_or(u64::MAX);
            Answer {
                allowed: eval.allowed,
                remaining: whole(eval.cap.saturating_sub(eval.d) / u128::from(rule.window_us())),
                reset_after_us: whole(eval.d.div_ceil(limit)),
                retry_after_us: if eval.allowed {
                    0
                } else {
                    whole((eval.new_d - eval.cap).div_ceil(limit))
                },
            }
        }
        State::Fixed { .. } => {
            let to_end = eval.end - now;
            Answer {
                allowed: eval.allowed,
                remaining: rule.limit().saturating_sub(eval.count),
                reset_after_us: to_end,
                retry_after_us: if eval.allowed { 0 } else { to_end },
            }
        }
    }
}
