//! The scripts' batch mode (what the coalescer sends) against the in-process mirror: a batch is
//! decided as if its requests came one after another at one instant, including several
//! requests on one key (which the scripts read once and write once per call).
#![allow(clippy::unwrap_used)]

mod limiter_support;

use std::time::Duration;

use limiter_support::*;
use sluice_limiter::{Rule, script_source};

/// `EVAL <script> <n> <keys...> <now> 2 <R> <rules...> <codes...>`, the layout
/// `limiter/lua/driver.lua` documents, on an injected `now`.
fn batch_command(
    rules: &[&Rule],
    keys: &[Vec<u8>],
    requests: &[(usize, u64, bool)],
    now: u64,
) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script_source(rules[0].algorithm())).arg(keys.len());
    for key in keys {
        cmd.arg(key);
    }
    cmd.arg(now).arg(2).arg(rules.len());
    for rule in rules {
        let param = match (rule.granularity(), rule.burst()) {
            (Some(g), _) => g.as_micros() as u64,
            (_, Some(b)) => b,
            _ => 0,
        };
        cmd.arg(rule.limit())
            .arg(rule.window().as_micros() as u64)
            .arg(param);
    }
    let r = rules.len() as i64;
    for &(rule, cost, consume) in requests {
        let code = cost as i64 * r + rule as i64;
        cmd.arg(if consume { code } else { -code });
    }
    cmd
}

sluice_tests::topology_test! {
    /// Random batches of 1 to 12 requests over two rules of one algorithm and three ids (one
    /// hash tag), costs 1 to 3, one in five a peek, at random instants: every answer equals
    /// the mirror's, checked or peeked one by one at the same instant.
    #[tokio::test]
    async fn batches_match_one_by_one_checks(name, spec) {
        let pairs = [
            [Rule::sliding_log("a", 7, 300 * MS).unwrap(), Rule::sliding_log("b", 5, 200 * MS).unwrap()],
            [
                Rule::sliding_counter("a", 7, 300 * MS, 30 * MS).unwrap(),
                Rule::sliding_counter("b", 9, 300 * MS, 300 * MS).unwrap(),
            ],
            [Rule::gcra("a", 7, 300 * MS, 3).unwrap(), Rule::gcra("b", 4, 100 * MS, 4).unwrap()],
            [Rule::fixed_window("a", 7, 300 * MS).unwrap(), Rule::fixed_window("b", 3, 7 * MS).unwrap()],
        ];
        let ids = ["{b}x", "{b}y", "{b}z"];
        let mut conn = handle(spec).await;
        let mut next = xorshift(0xba7c4);
        for pair in &pairs {
            let (remote, clock) = manual(spec, "batch").await;
            let local = local_only(&clock);
            let rules = [&pair[0], &pair[1]];
            for step in 0..150 {
                clock.advance(Duration::from_micros(next(60_000)));
                let n = 1 + next(12) as usize;
                let mut keys = Vec::with_capacity(n);
                let mut requests = Vec::with_capacity(n);
                for _ in 0..n {
                    let rule = next(2) as usize;
                    let id = ids[next(3) as usize];
                    let consume = next(5) != 0;
                    // A peek asks about one unit, as Limiter::peek does.
                    let cost = if consume { 1 + next(3) } else { 1 };
                    keys.push(remote.redis_key(rules[rule], id));
                    requests.push((rule, cost, consume, id));
                }
                let plain: Vec<_> = requests.iter().map(|&(r, c, k, _)| (r, c, k)).collect();
                let reply: Vec<i64> = batch_command(&rules, &keys, &plain, clock.now_us())
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                assert_eq!(reply.len(), 3 + 4 * n, "{name}");
                assert_eq!(reply[0] as u64, clock.now_us());
                for (i, &(rule, cost, consume, id)) in requests.iter().enumerate() {
                    let want = if consume {
                        local.check(rules[rule], id, cost).await.unwrap()
                    } else {
                        local.peek(rules[rule], id).await.unwrap()
                    };
                    let got = &reply[3 + 4 * i..7 + 4 * i];
                    assert_eq!(
                        (got[0] == 1, got[1] as u64, got[2] as u64, got[3] as u64),
                        (
                            want.allowed,
                            want.remaining,
                            want.reset_after.as_micros() as u64,
                            want.retry_after.map_or(0, |d| d.as_micros() as u64)
                        ),
                        "{name} {:?} step {step} request {i} ({id}, cost {cost}, consume {consume})",
                        rules[rule]
                    );
                }
            }
        }
    }
}
