//! Multi-rule checks whose rules use different algorithms (issue 9: a per-second sliding
//! counter AND a per-day fixed window, checked and charged all or nothing in one script call),
//! and the same rule and key listed twice in one call, on Redis and on the local fallback.
#![allow(clippy::unwrap_used)]

mod limiter_support;

use std::time::Duration;

use limiter_support::*;
use sluice_limiter::{Check, LimitError, Limiter, MultiDecision, Rule, Source};

/// One rule per algorithm, each with room for exactly `2` requests before it denies (the
/// counter first, after 1 s the fixed window, and so on), their keys sharing the tag `{42}`.
fn rules() -> Vec<Rule> {
    vec![
        Rule::sliding_counter("per-second", 2, SEC, 100 * MS).unwrap(),
        Rule::fixed_window("per-day", 4, 86_400 * SEC).unwrap(),
        Rule::gcra("rate", 6, 3 * SEC, 6).unwrap(),
        Rule::sliding_log("per-minute", 8, 60 * SEC).unwrap(),
    ]
}

const KEYS: [&str; 4] = ["user:{42}", "route:/upload:{42}", "{42}", "tenant:{42}:x"];

fn checks(rules: &[Rule]) -> Vec<Check<'_>> {
    rules
        .iter()
        .zip(KEYS)
        .map(|(rule, key)| Check::new(rule, key))
        .collect()
}

/// Each rule's remaining units, peeked one by one.
async fn remaining(limiter: &Limiter, rules: &[Rule]) -> Vec<u64> {
    let mut out = Vec::new();
    for (rule, key) in rules.iter().zip(KEYS) {
        out.push(limiter.peek(rule, key).await.unwrap().remaining);
    }
    out
}

fn fields(m: &MultiDecision) -> Vec<(bool, u64, Duration, Option<Duration>)> {
    m.decisions
        .iter()
        .map(|d| (d.allowed, d.remaining, d.reset_after, d.retry_after))
        .collect()
}

sluice_tests::topology_test! {
    /// Four algorithms in one all-or-nothing check: when one denies, none is charged; the same
    /// steps on the local fallback give the same answers, field by field.
    #[tokio::test]
    async fn mixed_algorithms_are_all_or_nothing(name, spec) {
        let (remote, clock) = manual(spec, "mixed").await;
        let local = local_only(&clock);
        let rules = rules();
        let checks = checks(&rules);
        for limiter in [&remote, &local] {
            for i in 0..2 {
                let m = limiter.check_all(&checks).await.unwrap();
                assert!(m.allowed && m.denied_by.is_none(), "{name} {i}: {m:?}");
            }
            let before = remaining(limiter, &rules).await;
            assert_eq!(before, [0, 2, 4, 6], "{name}");
            // The counter denies: nothing is charged anywhere.
            let m = limiter.check_all(&checks).await.unwrap();
            assert!(!m.allowed, "{name}");
            assert_eq!(m.denied_by, Some(0), "{name}");
            assert!(m.decisions[1..].iter().all(|d| d.allowed), "{name}: {m:?}");
            assert_eq!(remaining(limiter, &rules).await, before, "{name}: charged on a denial");
        }
        // A second later the counter has room again: two more use up the fixed window (per
        // day); a second after that, the fixed window alone denies, and again charges nothing
        // elsewhere.
        clock.advance(SEC + 100 * MS);
        for limiter in [&remote, &local] {
            for _ in 0..2 {
                assert!(limiter.check_all(&checks).await.unwrap().allowed, "{name}");
            }
        }
        clock.advance(SEC + 100 * MS);
        let before = remaining(&remote, &rules).await;
        let m = remote.check_all(&checks).await.unwrap();
        assert_eq!(m.denied_by, Some(1), "{name}: {m:?}");
        assert_eq!(m.source, Source::Redis);
        assert_eq!(remaining(&remote, &rules).await, before, "{name}");
        // The mirror agrees on every decision of the denial.
        let l = local.check_all(&checks).await.unwrap();
        assert_eq!(l.source, Source::Local);
        assert_eq!((l.allowed, l.denied_by), (m.allowed, m.denied_by), "{name}");
        assert_eq!(fields(&l), fields(&m), "{name}");
        assert_eq!(m.retry_after(), m.decisions[1].retry_after, "{name}");
    }
}

sluice_tests::topology_test! {
    /// `peek_all` evaluates a mixed check at each cost and charges nothing; the answers match
    /// the local fallback's.
    #[tokio::test]
    async fn mixed_peeks_charge_nothing(name, spec) {
        let (remote, clock) = manual(spec, "mixed-peek").await;
        let local = local_only(&clock);
        let rules = rules();
        let checks = checks(&rules);
        for limiter in [&remote, &local] {
            assert!(limiter.check_all(&checks).await.unwrap().allowed, "{name}");
        }
        let costly: Vec<Check<'_>> = checks.iter().map(|c| c.cost(2)).collect();
        for _ in 0..3 {
            let m = remote.peek_all(&costly).await.unwrap();
            // The counter (1 left) can't take 2; the others can.
            assert!(!m.allowed && m.denied_by == Some(0), "{name}: {m:?}");
            let remaining: Vec<u64> = m.decisions.iter().map(|d| d.remaining).collect();
            assert_eq!(remaining, [1, 3, 5, 7], "{name}: {m:?}");
            let l = local.peek_all(&costly).await.unwrap();
            assert_eq!(fields(&l), fields(&m), "{name}");
        }
        assert_eq!(remaining(&remote, &rules).await, [1, 3, 5, 7], "{name}");
    }
}

sluice_tests::topology_test! {
    /// After `SCRIPT FLUSH` the mixed script is loaded again by itself (`NOSCRIPT`).
    #[tokio::test]
    async fn script_flush_reloads_the_mixed_script(name, spec) {
        let (limiter, clock) = manual(spec, "mixed-flush").await;
        let rules = rules();
        let checks = checks(&rules);
        for round in 0..3 {
            sluice_tests::flush_scripts(spec);
            let m = limiter.check_all(&checks).await.unwrap();
            assert!(m.allowed, "{name} round {round}: {m:?}");
            assert_eq!(m.source, Source::Redis, "{name}");
            clock.advance(SEC);
        }
        assert_eq!(remaining(&limiter, &rules).await[1], 1, "{name}: three charged");
    }
}

sluice_tests::topology_test! {
    /// The same rule and key twice in one call count together (they used to be evaluated
    /// against the state before either was charged, so together they could pass the limit):
    /// decided as one check of the summed cost, reported to both, on every algorithm, on
    /// Redis and locally.
    #[tokio::test]
    async fn the_same_rule_and_key_twice_count_together(name, spec) {
        let (remote, clock) = manual(spec, "dupes").await;
        let local = local_only(&clock);
        for rule in [
            Rule::sliding_log("dup", 3, SEC).unwrap(),
            Rule::sliding_counter("dup", 3, SEC, 100 * MS).unwrap(),
            Rule::gcra("dup", 3, SEC, 3).unwrap(),
            Rule::fixed_window("dup", 3, SEC).unwrap(),
        ] {
            let other = Rule::fixed_window("other", 10, SEC).unwrap();
            let twice = [
                Check::new(&rule, "{d}"),
                Check::new(&other, "{d}x"),
                Check::new(&rule, "{d}"),
            ];
            for limiter in [&remote, &local] {
                let m = limiter.check_all(&twice).await.unwrap();
                assert!(m.allowed, "{name} {rule:?}: {m:?}");
                assert_eq!(m.decisions[0], m.decisions[2], "{name} {rule:?}");
                assert_eq!(m.decisions[0].remaining, 1, "{name} {rule:?}: charged twice, once");
                // 2 more on 1 left: denied as a whole, nothing charged.
                let m = limiter.check_all(&twice).await.unwrap();
                assert!(!m.allowed && m.denied_by == Some(0), "{name} {rule:?}: {m:?}");
                assert!(!m.decisions[2].allowed, "{name} {rule:?}");
                assert_eq!(m.decisions[1].remaining, 9, "{name} {rule:?}");
                let d = limiter.check(&rule, "{d}", 1).await.unwrap();
                assert!(d.allowed && d.remaining == 0, "{name} {rule:?}: {d:?}");
                // A peek of the pair: the summed cost, charged nowhere.
                let m = limiter.peek_all(&twice).await.unwrap();
                assert!(!m.allowed && m.decisions[1].remaining == 9, "{name} {rule:?}");
            }
            // Together over the capacity: never admissible, refused before sending.
            let over = [Check::new(&rule, "{d}").cost(2), Check::new(&rule, "{d}").cost(2)];
            let err = remote.check_all(&over).await.unwrap_err();
            assert!(
                matches!(err, LimitError::InsufficientCapacity { cost: 4, capacity: 3, .. }),
                "{name}: {err}"
            );
            clock.advance(3 * SEC);
        }
        // One name, one definition: the same key with two different rules is refused.
        let a = Rule::sliding_log("same", 3, SEC).unwrap();
        let b = Rule::sliding_log("same", 4, SEC).unwrap();
        let err = remote
            .check_all(&[Check::new(&a, "k"), Check::new(&b, "k")])
            .await
            .unwrap_err();
        assert!(matches!(err, LimitError::ConflictingRules { .. }), "{name}: {err}");
    }
}
