//! One request's [`Plan`] into limiter calls, and their decisions into a [`Response`].
//!
//! Each limit the plan applies becomes an item:
//! - **never**: `requests_per_unit: 0`, or hits above what the limit can ever admit: refused
//!   without asking Redis (a peek of a zero limit is answered OK with 0 left);
//! - **peek**: hits 0 (a descriptor's `hits_addend: 0`): checked, never charged;
//! - **count**: charged `hits` units.
//!
//! Then:
//! 1. Peeks are asked first (they charge nothing). An enforced never or a refusing enforced
//!    peek refuses the request: the counted items are then only peeked, to report them.
//! 2. Otherwise every counted item, enforced and shadow, goes into ONE `check_all` call: all
//!    of the request's keys share the domain's hash tag, so it is one script call on one
//!    slot, and a refusal charges nothing (envoy's STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT).
//! 3. If only shadow limits refused, nothing was charged: the enforced items are charged in a
//!    second call, and the shadow ones are reported `shadow_over_limit` and answered OK.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_limiter::{Check, Decision, Limiter, Rule, Source};

use super::{
    CheckError, OutagePolicy, RateLimitService,
    response::{Code, CurrentLimit, DescriptorStatus, Response},
};
use crate::{
    headers::PolicyStatus,
    limit::Rate,
    matcher::{Answer, Applied, DescriptorPlan, LimitSource, Plan},
    metrics::{DecisionResult, DetailBudget, UNKNOWN_DOMAIN},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Never,
    Peek,
    Count,
}

struct Item<'p> {
    desc: usize,
    applied: &'p Applied<'p>,
    rule: Option<&'p Rule>,
    key: &'p [u8],
    cost: u64,
    shadow: bool,
    kind: Kind,
}

impl Item<'_> {
    fn check(&self) -> Option<Check<'_>> {
        let rule = self.rule?;
        Some(Check::new(rule, self.key).cost(self.cost))
    }
}

/// The limiter rule for a rate (every rate that does not deny all has one).
fn rule_for(rate: &Rate) -> Result<&Rule, CheckError> {
    rate.rule().ok_or_else(|| CheckError::Rule {
        limit: rate.to_string(),
        reason: "no limiter rule for this rate".to_owned(),
    })
}

/// The name a policy goes by in the headers: the limit's `name`, else its descriptor's config
/// path (with the window when the descriptor has several limits).
fn policy_name(domain: &str, d: &DescriptorPlan<'_>, applied: &Applied<'_>) -> String {
    if let Some(name) = applied.name() {
        return name.to_owned();
    }
    let rate = applied.rate();
    match (applied.source(), d.matched()) {
        (LimitSource::Config, Some(node)) if node.limits().len() > 1 => {
            format!("{}#{}", node.path(), rate.rule_name())
        }
        (LimitSource::Config, Some(node)) => node.path().to_owned(),
        _ => format!("{domain}#override-{}", rate.rule_name()),
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Time to the end of the fixed window (aligned to the epoch, as envoy's) holding `time_us`.
fn to_window_end(window: Duration, time_us: u64) -> Duration {
    let w = u64::try_from(window.as_micros()).unwrap_or(u64::MAX).max(1);
    Duration::from_micros(w - time_us % w)
}

/// One item's state after the calls.
struct Outcome {
    allowed: bool,
    remaining: u64,
    reset: Duration,
    retry: Option<Duration>,
}

fn outcome(item: &Item<'_>, decision: Option<&Decision>) -> Outcome {
    let rate = item.applied.rate();
    match decision {
        // A fixed window's reset (and retry) is the end of its epoch-aligned window, as
        // envoy reports it; the limiter answers so for every algorithm.
        Some(d) => Outcome {
            allowed: d.allowed,
            remaining: d.remaining,
            reset: d.reset_after,
            retry: (!d.allowed).then(|| d.retry_after.unwrap_or(d.reset_after)),
        },
        None => {
            // A never item: refused unless it is only peeked.
            let reset = to_window_end(rate.window(), now_us());
            let allowed = item.cost == 0;
            Outcome {
                allowed,
                remaining: 0,
                reset,
                retry: (!allowed).then_some(reset),
            }
        }
    }
}

/// Peek `which` items (cost 1 each, charging nothing) in one script call: a request's keys
/// share the domain's hash tag. Items with the same rule and key are asked once (the limiter
/// would add their costs up).
async fn peek_all<'i>(
    limiter: &Limiter,
    items: &'i [Item<'i>],
    which: impl Iterator<Item = usize>,
) -> Result<Vec<(usize, Decision)>, CheckError> {
    let mut asked: Vec<(&Rule, &[u8])> = Vec::new();
    let mut answer_of: Vec<(usize, usize)> = Vec::new();
    for i in which {
        let item = &items[i];
        let Some(rule) = item.rule else { continue };
        let same = asked
            .iter()
            .position(|(r, k)| r.name() == rule.name() && *k == item.key);
        let slot = same.unwrap_or_else(|| {
            asked.push((rule, item.key));
            asked.len() - 1
        });
        answer_of.push((i, slot));
    }
    if asked.is_empty() {
        return Ok(Vec::new());
    }
    let checks: Vec<Check<'_>> = asked
        .iter()
        .map(|(rule, key)| Check::new(rule, key))
        .collect();
    let multi = limiter.peek_all(&checks).await?;
    Ok(answer_of
        .into_iter()
        .filter_map(|(i, slot)| Some((i, multi.decisions.get(slot)?.clone())))
        .collect())
}

async fn check_all(
    limiter: &Limiter,
    items: &[Item<'_>],
    which: &[usize],
) -> Result<(bool, Vec<(usize, Decision)>), CheckError> {
    let checks: Vec<Check<'_>> = which.iter().filter_map(|&i| items[i].check()).collect();
    let multi = limiter.check_all(&checks).await?;
    Ok((
        multi.allowed,
        which.iter().copied().zip(multi.decisions).collect(),
    ))
}

/// The same rule and key counted twice in one request (two identical descriptors) are charged
/// together, their costs summed, as the limiter does; a sum over the rule's capacity could
/// never fit, so those items are refused without asking Redis, like a single such cost.
fn never_over_capacity_together(items: &mut [Item<'_>]) {
    // A request holds a handful of items: a quadratic scan is cheaper than hashing them.
    let together = |it: &Item<'_>, rule: &Rule| -> u64 {
        items
            .iter()
            .filter(|o| {
                o.kind == Kind::Count
                    && o.key == it.key
                    && o.rule.is_some_and(|r| r.name() == rule.name())
            })
            .map(|o| o.cost)
            .sum()
    };
    let over: Vec<bool> = items
        .iter()
        .map(|it| match (it.kind, it.rule) {
            (Kind::Count, Some(rule)) => together(it, rule) > rule.capacity(),
            _ => false,
        })
        .collect();
    for (it, over) in items.iter_mut().zip(over) {
        if over {
            it.kind = Kind::Never;
        }
    }
}

pub(super) async fn run(
    service: &RateLimitService,
    budget: &DetailBudget,
    plan: &Plan<'_>,
    domain: &str,
    policy: OutagePolicy,
) -> Result<Response, CheckError> {
    let limiter = service.limiter(policy);
    let mut items: Vec<Item<'_>> = Vec::new();
    for (desc, d, applied) in plan.checks() {
        let Some(key) = d.key_id() else { continue };
        let rate = applied.rate();
        let cost = d.hits();
        let (rule, kind) = if rate.denies_all() {
            (None, Kind::Never)
        } else {
            let rule = rule_for(rate)?;
            if cost > rule.capacity() {
                (None, Kind::Never)
            } else if cost == 0 {
                (Some(rule), Kind::Peek)
            } else {
                (Some(rule), Kind::Count)
            }
        };
        items.push(Item {
            desc,
            applied,
            rule,
            key: key.as_bytes(),
            cost,
            shadow: d.shadow_mode(),
            kind,
        });
    }

    never_over_capacity_together(&mut items);

    let mut decisions: Vec<Option<Decision>> = vec![None; items.len()];
    let indices = |kind: Kind| {
        items
            .iter()
            .enumerate()
            .filter(move |(_, it)| it.kind == kind)
            .map(|(i, _)| i)
    };
    for (i, d) in peek_all(limiter, &items, indices(Kind::Peek)).await? {
        decisions[i] = Some(d);
    }
    let refused_before_counting = items.iter().zip(&decisions).any(|(it, d)| {
        !it.shadow
            && match it.kind {
                Kind::Never => it.cost > 0,
                Kind::Peek => d.as_ref().is_some_and(|d| !d.allowed),
                Kind::Count => false,
            }
    });
    let counted: Vec<usize> = indices(Kind::Count).collect();
    if refused_before_counting {
        for (i, d) in peek_all(limiter, &items, counted.iter().copied()).await? {
            decisions[i] = Some(d);
        }
    } else if !counted.is_empty() {
        let (allowed, answered) = check_all(limiter, &items, &counted).await?;
        let enforced_refused = answered
            .iter()
            .any(|(i, d)| !items[*i].shadow && !d.allowed);
        for (i, d) in answered {
            decisions[i] = Some(d);
        }
        if !allowed && !enforced_refused {
            // Only shadow limits refused, so nothing was charged: charge the enforced ones.
            let enforced: Vec<usize> = counted
                .iter()
                .copied()
                .filter(|&i| !items[i].shadow)
                .collect();
            if !enforced.is_empty() {
                for (i, d) in check_all(limiter, &items, &enforced).await?.1 {
                    decisions[i] = Some(d);
                }
            }
        }
    }

    Ok(respond(
        service, budget, plan, domain, policy, &items, &decisions,
    ))
}

fn respond(
    service: &RateLimitService,
    budget: &DetailBudget,
    plan: &Plan<'_>,
    domain: &str,
    policy: OutagePolicy,
    items: &[Item<'_>],
    decisions: &[Option<Decision>],
) -> Response {
    let metrics = service.metrics();
    let domain_label = if plan.domain().is_some() {
        domain
    } else {
        UNKNOWN_DOMAIN
    };
    let outcomes: Vec<Outcome> = items
        .iter()
        .zip(decisions)
        .map(|(it, d)| outcome(it, d.as_ref()))
        .collect();
    let mut statuses = Vec::with_capacity(plan.descriptors().len());
    let mut policies = Vec::new();
    let mut retry_after: Option<Duration> = None;
    for (index, d) in plan.descriptors().iter().enumerate() {
        let rule_label = d.metric().map(|m| budget.label(m));
        match d.answer() {
            Answer::NoLimit => {
                statuses.push(DescriptorStatus::ok_without_limit());
                continue;
            }
            Answer::Unlimited => {
                if let Some(rule) = rule_label {
                    metrics.decision(domain_label, rule, DecisionResult::Ok);
                }
                statuses.push(DescriptorStatus::unlimited());
                continue;
            }
            _ => {}
        }
        let mine: Vec<usize> = (0..items.len())
            .filter(|&i| items[i].desc == index)
            .collect();
        let Some(&first) = mine.first() else {
            statuses.push(DescriptorStatus::ok_without_limit());
            continue;
        };
        let refused = mine.iter().find(|&&i| !outcomes[i].allowed).copied();
        let reported = refused.unwrap_or_else(|| {
            mine.iter()
                .copied()
                .min_by_key(|&i| outcomes[i].remaining)
                .unwrap_or(first)
        });
        let shadow = d.shadow_mode();
        let over = refused.is_some();
        let code = if over && !shadow {
            Code::OverLimit
        } else {
            Code::Ok
        };
        let out = &outcomes[reported];
        let applied = items[reported].applied;
        let (requests_per_unit, unit, name) = applied.current_limit();
        let result = match (over, shadow) {
            (true, true) => DecisionResult::ShadowOverLimit,
            (true, false) => DecisionResult::OverLimit,
            (false, _) => {
                let limit = u64::from(requests_per_unit);
                let used = limit.saturating_sub(out.remaining);
                if limit > 0 && used * 5 >= limit * 4 {
                    DecisionResult::NearLimit
                } else {
                    DecisionResult::Ok
                }
            }
        };
        if let Some(rule) = rule_label {
            metrics.decision(domain_label, rule, result);
        }
        if code == Code::OverLimit {
            for &i in &mine {
                if let Some(retry) = outcomes[i].retry {
                    retry_after = Some(retry_after.map_or(retry, |r| r.max(retry)));
                }
            }
        }
        if !shadow {
            for &i in &mine {
                let rate = items[i].applied.rate();
                policies.push(PolicyStatus {
                    name: policy_name(domain, d, items[i].applied),
                    quota: u64::from(rate.requests_per_unit()),
                    window: rate.window(),
                    remaining: outcomes[i].remaining,
                    reset: outcomes[i].reset,
                });
            }
        }
        statuses.push(DescriptorStatus {
            code,
            current_limit: Some(CurrentLimit {
                requests_per_unit,
                unit,
                name: name.to_owned(),
            }),
            limit_remaining: u32::try_from(out.remaining).unwrap_or(u32::MAX),
            duration_until_reset: Some(out.reset),
        });
    }
    let answered_by = decisions
        .iter()
        .flatten()
        .map(|d| d.source)
        .find(|s| *s != Source::Redis)
        .or_else(|| decisions.iter().flatten().next().map(|d| d.source));
    if answered_by.is_some_and(|s| s != Source::Redis) {
        metrics.outage_answer(domain_label, policy.label());
    }
    let overall_code = if statuses.iter().any(|s| s.code == Code::OverLimit) {
        Code::OverLimit
    } else {
        Code::Ok
    };
    Response {
        overall_code,
        statuses,
        policies,
        retry_after: if overall_code == Code::OverLimit {
            retry_after
        } else {
            None
        },
        answered_by,
        decided_at_us: decisions.iter().flatten().map(|d| d.time_us).max(),
    }
}
