//! Limiter semantics against real Redis, standalone and Cluster, on an injected clock.
#![allow(clippy::unwrap_used)]

mod limiter_support;

use std::time::Duration;

use limiter_support::*;
use sluice_limiter::{Check, LimitError, Rule, Source};

sluice_tests::topology_test! {
    #[tokio::test]
    async fn sliding_log_window_edges(name, spec) {
        let (limiter, clock) = manual(spec, "log-edges").await;
        let rule = Rule::sliding_log("edges", 3, SEC).unwrap();
        for i in 0..3 {
            let d = limiter.check(&rule, "k", 1).await.unwrap();
            assert!(d.allowed, "{name}: request {i}");
            assert_eq!(d.remaining, 2 - i);
            assert_eq!(d.source, Source::Redis);
            assert_eq!(d.reset_after, SEC);
        }
        let denied = limiter.check(&rule, "k", 1).await.unwrap();
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after, Some(SEC), "{name}");
        // An entry admitted at s counts while t - W < s: still inside 1 µs before W elapses...
        clock.advance(SEC - Duration::from_micros(1));
        assert!(!limiter.check(&rule, "k", 1).await.unwrap().allowed);
        // ...and leaves exactly at s + W.
        clock.advance(Duration::from_micros(1));
        let d = limiter.check(&rule, "k", 1).await.unwrap();
        assert!(d.allowed, "{name}");
        assert_eq!(d.remaining, 2, "{name}: all three left the window together");
    }
}

sluice_tests::topology_test! {
    #[tokio::test]
    async fn sliding_counter_weights_the_straddling_bucket(name, spec) {
        let (limiter, clock) = manual(spec, "ctr-edges").await;
        // 10 per second in 10 buckets of 100 ms.
        let rule = Rule::sliding_counter("edges", 10, SEC, 100 * MS).unwrap();
        for _ in 0..10 {
            assert!(
                limiter.check(&rule, "k", 1).await.unwrap().allowed,
                "{name}"
            );
        }
        let d = limiter.check(&rule, "k", 1).await.unwrap();
        assert!(!d.allowed);
        // The 10 units sit in bucket b; 1 s later bucket b straddles the window start and
        // fades linearly over the next 100 ms: one unit frees after 10 ms.
        assert_eq!(d.retry_after, Some(SEC + 10 * MS), "{name}");
        clock.advance(SEC);
        assert!(!limiter.peek(&rule, "k").await.unwrap().allowed);
        clock.advance(10 * MS);
        let d = limiter.check(&rule, "k", 1).await.unwrap();
        assert!(d.allowed, "{name}");
        clock.advance(50 * MS);
        // 60 ms into the fade, 40% of bucket b still counts: 4 + 1 admitted = 5, so 5 remain.
        let d = limiter.peek(&rule, "k").await.unwrap();
        assert_eq!(d.remaining, 5, "{name}");
        // N = 1 is the classic two-window weighting.
        let classic = Rule::sliding_counter("classic", 10, SEC, SEC).unwrap();
        for _ in 0..10 {
            assert!(limiter.check(&classic, "c", 1).await.unwrap().allowed);
        }
        clock.advance(SEC + 300 * MS);
        // 70% of the previous window counts: 7 used, 3 remain.
        assert_eq!(
            limiter.peek(&classic, "c").await.unwrap().remaining,
            3,
            "{name}"
        );
    }
}

sluice_tests::topology_test! {
    #[tokio::test]
    async fn one_millisecond_buckets_in_a_one_second_window(name, spec) {
        let (limiter, clock) = manual(spec, "ctr-1ms").await;
        let rule = Rule::sliding_counter("fine", 1000, SEC, MS).unwrap();
        let mut admitted = 0;
        // 1.5 s of traffic, 2 requests per ms: the limit holds and buckets are evicted as they
        // leave the window.
        for _ in 0..1500 {
            for _ in 0..2 {
                if limiter.check(&rule, "k", 1).await.unwrap().allowed {
                    admitted += 1;
                }
            }
            clock.advance(MS);
        }
        // 1000 in the first 500 ms, none until they start to leave at 1 s, then 2 per ms as
        // they fade out, 1 ms bucket by 1 ms bucket.
        assert!(
            (1950..=2050).contains(&admitted),
            "{name}: admitted {admitted}"
        );
        // Idle for longer than the window: everything is forgotten, in one bounded step.
        clock.advance(3 * SEC);
        assert_eq!(
            limiter.peek(&rule, "k").await.unwrap().remaining,
            1000,
            "{name}"
        );
    }
}

sluice_tests::topology_test! {
    #[tokio::test]
    async fn gcra_rate_and_burst(name, spec) {
        let (limiter, clock) = manual(spec, "gcra").await;
        // 10 per second (one every 100 ms), bursts of 3.
        let rule = Rule::gcra("g", 10, SEC, 3).unwrap();
        for i in 0..3 {
            let d = limiter.check(&rule, "k", 1).await.unwrap();
            assert!(d.allowed, "{name}");
            assert_eq!(d.remaining, 2 - i);
            assert_eq!(d.limit, 3);
        }
        let d = limiter.check(&rule, "k", 1).await.unwrap();
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Some(100 * MS), "{name}");
        assert_eq!(d.reset_after, 300 * MS);
        clock.advance(100 * MS - Duration::from_micros(1));
        assert!(!limiter.check(&rule, "k", 1).await.unwrap().allowed);
        clock.advance(Duration::from_micros(1));
        assert!(
            limiter.check(&rule, "k", 1).await.unwrap().allowed,
            "{name}"
        );
        // A burst needs the time to refill it.
        let d = limiter.check(&rule, "k", 3).await.unwrap();
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Some(300 * MS), "{name}");
    }
}

sluice_tests::topology_test! {
    /// envoy's fixed window: windows start at multiples of the window since the Unix epoch; a
    /// window admits at most the limit, whatever came before it; reset-after and a denial's
    /// retry-after are the time to the window's end.
    #[tokio::test]
    async fn fixed_window_edges_and_alignment(name, spec) {
        let (limiter, clock) = manual(spec, "fw-edges").await;
        let rule = Rule::fixed_window("edges", 3, SEC).unwrap();
        // The clock starts on a whole second: 300 ms into a window.
        clock.advance(300 * MS);
        let d = limiter.peek(&rule, "k").await.unwrap();
        assert!(d.allowed && d.remaining == 3, "{name}: {d:?}");
        assert_eq!(d.reset_after, 700 * MS, "{name}: the quota resets at the window's end");
        for i in 0..3 {
            let d = limiter.check(&rule, "k", 1).await.unwrap();
            assert!(d.allowed, "{name}: request {i}");
            assert_eq!((d.remaining, d.limit), (2 - i, 3), "{name}");
            assert_eq!((d.reset_after, d.retry_after), (700 * MS, None), "{name}");
        }
        let denied = limiter.check(&rule, "k", 1).await.unwrap();
        assert!(!denied.allowed && denied.remaining == 0, "{name}: {denied:?}");
        assert_eq!(denied.retry_after, Some(700 * MS), "{name}");
        // The last microsecond of the window still counts...
        clock.advance(700 * MS - Duration::from_micros(1));
        let denied = limiter.check(&rule, "k", 1).await.unwrap();
        assert_eq!(denied.retry_after, Some(Duration::from_micros(1)), "{name}");
        // ...and the next window starts from zero: 3 more at once, 6 within 2 µs (the burst
        // across a boundary that fixed windows allow).
        clock.advance(Duration::from_micros(1));
        for i in 0..3 {
            let d = limiter.check(&rule, "k", 1).await.unwrap();
            assert!(d.allowed, "{name}: request {i} of the next window");
            assert_eq!((d.remaining, d.reset_after), (2 - i, SEC), "{name}");
        }
        assert!(!limiter.check(&rule, "k", 1).await.unwrap().allowed, "{name}");
        // Idle for several windows: full again, no TTL needed (the injected clock outruns it).
        clock.advance(5 * SEC + 250 * MS);
        let d = limiter.check(&rule, "k", 3).await.unwrap();
        assert!(d.allowed && d.remaining == 0, "{name}: {d:?}");
        assert_eq!(d.reset_after, 750 * MS, "{name}");

        // Alignment to the epoch, not to the first request: a minute window ends on the
        // minute, a 7 ms window on a multiple of 7 ms.
        for window in [60 * SEC, 7 * MS, 86_400 * SEC] {
            let rule = Rule::fixed_window("aligned", 5, window).unwrap();
            let w = window.as_micros() as u64;
            for step in [0, 1, 2_345] {
                clock.advance(Duration::from_micros(step));
                let d = limiter.check(&rule, "a", 1).await.unwrap();
                let to_end = w - clock.now_us() % w;
                assert_eq!(
                    d.reset_after,
                    Duration::from_micros(to_end),
                    "{name} {rule:?} at {}",
                    clock.now_us()
                );
            }
            clock.advance(window);
        }
    }
}

sluice_tests::topology_test! {
    /// A changed window keeps what the old one counted until the old window ends (never
    /// admitting more); the TTL of a fixed-window key, on Redis time, is the time to the
    /// window's end.
    #[tokio::test]
    async fn fixed_window_changes_and_ttl(name, spec) {
        let (limiter, clock) = manual(spec, "fw-change").await;
        let day = Rule::fixed_window("r", 5, 86_400 * SEC).unwrap();
        let second = Rule::fixed_window("r", 5, SEC).unwrap();
        assert!(limiter.check(&day, "k", 5).await.unwrap().allowed);
        clock.advance(3 * SEC);
        let d = limiter.check(&second, "k", 1).await.unwrap();
        assert!(!d.allowed, "{name}: the day's count was dropped by a window change");
        let higher = Rule::fixed_window("r", 8, SEC).unwrap();
        let d = limiter.check(&higher, "k", 3).await.unwrap();
        assert!(d.allowed && d.remaining == 0, "{name}: a raised limit applies at once: {d:?}");

        let limiter = live(spec, "fw-ttl").await;
        let rule = Rule::fixed_window("ttl", 10, 10 * SEC).unwrap();
        let d = limiter.check(&rule, "k", 1).await.unwrap();
        assert!(d.allowed && d.reset_after <= 10 * SEC, "{name}: {d:?}");
        let mut conn = handle(spec).await;
        let pttl: i64 = redis::cmd("PTTL")
            .arg(limiter.redis_key(&rule, "k"))
            .query_async(&mut conn)
            .await
            .unwrap();
        let reset = d.reset_after.as_millis() as i64;
        assert!(
            pttl > 0 && pttl <= reset + 1 && pttl + 500 >= reset,
            "{name}: pttl {pttl}, window ends in {reset} ms"
        );
    }
}

sluice_tests::topology_test! {
    #[tokio::test]
    async fn cost_and_rejections_do_not_consume(name, spec) {
        let (limiter, _clock) = manual(spec, "cost").await;
        let rules = [
            Rule::sliding_log("c", 5, SEC).unwrap(),
            Rule::sliding_counter("c", 5, SEC, 100 * MS).unwrap(),
            Rule::gcra("c", 5, SEC, 5).unwrap(),
            Rule::fixed_window("c", 5, SEC).unwrap(),
        ];
        for rule in &rules {
            let d = limiter.check(rule, "k", 3).await.unwrap();
            assert!(d.allowed && d.remaining == 2, "{name} {rule:?}: {d:?}");
            for _ in 0..3 {
                let d = limiter.check(rule, "k", 3).await.unwrap();
                assert!(!d.allowed, "{name} {rule:?}");
                assert_eq!(
                    d.remaining, 2,
                    "{name} {rule:?}: a rejection consumed quota"
                );
            }
            assert!(
                limiter.check(rule, "k", 2).await.unwrap().allowed,
                "{name} {rule:?}"
            );
            assert!(matches!(
                limiter.check(rule, "k", 6).await,
                Err(LimitError::InsufficientCapacity {
                    cost: 6,
                    capacity: 5,
                    ..
                })
            ));
            assert!(matches!(
                limiter.check(rule, "k", 0).await,
                Err(LimitError::ZeroCost)
            ));
        }
    }
}

sluice_tests::topology_test! {
    #[tokio::test]
    async fn peek_and_reset(name, spec) {
        let (limiter, _clock) = manual(spec, "peek").await;
        for rule in [
            Rule::sliding_log("p", 2, SEC).unwrap(),
            Rule::sliding_counter("p", 2, SEC, 10 * MS).unwrap(),
            Rule::gcra("p", 2, SEC, 2).unwrap(),
            Rule::fixed_window("p", 2, SEC).unwrap(),
        ] {
            for _ in 0..5 {
                let d = limiter.peek(&rule, "k").await.unwrap();
                assert!(d.allowed && d.remaining == 2, "{name} {rule:?}: {d:?}");
            }
            limiter.check(&rule, "k", 2).await.unwrap();
            assert!(
                !limiter.peek(&rule, "k").await.unwrap().allowed,
                "{name} {rule:?}"
            );
            limiter.reset(&rule, "k").await.unwrap();
            assert_eq!(
                limiter.peek(&rule, "k").await.unwrap().remaining,
                2,
                "{name} {rule:?}"
            );
        }
    }
}

sluice_tests::topology_test! {
    #[tokio::test]
    async fn changing_a_limit_applies_on_the_next_call(name, spec) {
        let (limiter, clock) = manual(spec, "change").await;
        for (low, mid, high) in [
            (
                Rule::sliding_log("r", 3, SEC).unwrap(),
                Rule::sliding_log("r", 5, SEC).unwrap(),
                Rule::sliding_log("r", 10, SEC).unwrap(),
            ),
            (
                Rule::sliding_counter("r", 3, SEC, 100 * MS).unwrap(),
                Rule::sliding_counter("r", 5, SEC, 100 * MS).unwrap(),
                Rule::sliding_counter("r", 10, SEC, 100 * MS).unwrap(),
            ),
        ] {
            assert!(limiter.check(&mid, "k", 4).await.unwrap().allowed);
            let d = limiter.check(&low, "k", 1).await.unwrap();
            assert!(!d.allowed && d.remaining == 0, "{name}: {d:?}");
            let d = limiter.check(&high, "k", 1).await.unwrap();
            assert!(d.allowed, "{name}");
            assert_eq!(d.remaining, 5, "{name}: state was kept across the change");
            clock.advance(3 * SEC);
        }
        // A granularity change keeps what was admitted (carried into the current bucket).
        let coarse = Rule::sliding_counter("g", 10, SEC, 100 * MS).unwrap();
        let fine = Rule::sliding_counter("g", 10, SEC, 10 * MS).unwrap();
        assert!(limiter.check(&coarse, "k", 7).await.unwrap().allowed);
        let d = limiter.check(&fine, "k", 1).await.unwrap();
        assert!(d.allowed && d.remaining == 2, "{name}: {d:?}");
        assert!(
            !limiter.check(&fine, "k", 3).await.unwrap().allowed,
            "{name}"
        );
    }
}

sluice_tests::topology_test! {
    #[tokio::test]
    async fn multi_rule_checks_are_all_or_nothing(name, spec) {
        let (limiter, clock) = manual(spec, "multi").await;
        let per_second = Rule::sliding_log("per-second", 2, SEC).unwrap();
        let per_minute = Rule::sliding_log("per-minute", 3, 60 * SEC).unwrap();
        let user = "user:{42}";
        let route = "route:/upload:{42}";
        let checks = [
            Check::new(&per_second, user),
            Check::new(&per_minute, route),
        ];
        for _ in 0..2 {
            let m = limiter.check_all(&checks).await.unwrap();
            assert!(m.allowed && m.denied_by.is_none(), "{name}: {m:?}");
        }
        let m = limiter.check_all(&checks).await.unwrap();
        assert!(!m.allowed);
        assert_eq!(m.denied_by, Some(0), "{name}");
        assert!(m.decisions[1].allowed);
        assert_eq!(
            m.decisions[1].remaining, 1,
            "{name}: the per-minute rule was charged"
        );
        clock.advance(SEC);
        assert!(limiter.check_all(&checks).await.unwrap().allowed);
        let m = limiter.check_all(&checks).await.unwrap();
        assert_eq!(m.denied_by, Some(1), "{name}: {m:?}");
        let sec = limiter.peek(&per_second, user).await.unwrap();
        assert_eq!(
            sec.remaining, 1,
            "{name}: the per-second rule was charged on a denial"
        );
        assert!(m.retry_after().unwrap() > 50 * SEC);

        // Keys without a common hash tag are refused before anything is sent.
        let err = limiter
            .check_all(&[Check::new(&per_second, "a"), Check::new(&per_minute, "b")])
            .await
            .unwrap_err();
        assert!(matches!(err, LimitError::CrossSlot { .. }), "{err}");
        // Counters and GCRA rules combine too.
        let a = Rule::gcra("a", 10, SEC, 1).unwrap();
        let b = Rule::gcra("b", 10, SEC, 2).unwrap();
        let pair = [Check::new(&a, "{x}1"), Check::new(&b, "{x}2").cost(1)];
        assert!(limiter.check_all(&pair).await.unwrap().allowed);
        let m = limiter.check_all(&pair).await.unwrap();
        assert_eq!(m.denied_by, Some(0));
        assert_eq!(m.decisions[1].remaining, 1, "{name}");
    }
}

sluice_tests::topology_test! {
    #[tokio::test]
    async fn keys_with_braces_and_odd_bytes_are_independent_and_expire(name, spec) {
        let limiter = live(spec, "odd").await;
        let long = "x".repeat(1024);
        let keys: Vec<&[u8]> = vec![
            b"}",
            b"{",
            b"{}",
            b"a{b}c",
            b"{b}",
            b"b",
            b"%7D",
            b"with space\nand newline",
            b"\x00\xff\xfe",
            "\u{1F600}".as_bytes(),
            b"",
            long.as_bytes(),
        ];
        let mut conn = handle(spec).await;
        for rule in [
            Rule::sliding_log("odd", 1, SEC).unwrap(),
            Rule::sliding_counter("odd", 1, SEC, 100 * MS).unwrap(),
            Rule::gcra("odd", 1, SEC, 1).unwrap(),
        ] {
            for key in &keys {
                assert!(
                    limiter.check(&rule, key, 1).await.unwrap().allowed,
                    "{name} {key:?}"
                );
            }
            for key in &keys {
                assert!(
                    !limiter.check(&rule, key, 1).await.unwrap().allowed,
                    "{name} {key:?}"
                );
                let pttl: i64 = redis::cmd("PTTL")
                    .arg(limiter.redis_key(&rule, key))
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                assert!(
                    pttl > 0 && pttl <= 1101,
                    "{name} {rule:?} {key:?}: pttl {pttl}"
                );
            }
        }
    }
}

sluice_tests::topology_test! {
    #[tokio::test]
    async fn script_flush_mid_run_reloads_the_scripts(name, spec) {
        let (limiter, _clock) = manual(spec, "flush").await;
        let rules = [
            Rule::sliding_log("f", 100, SEC).unwrap(),
            Rule::sliding_counter("f", 100, SEC, 10 * MS).unwrap(),
            Rule::gcra("f", 100, SEC, 100).unwrap(),
            Rule::fixed_window("f", 100, SEC).unwrap(),
        ];
        for round in 0..3u64 {
            for rule in &rules {
                let d = limiter.check(rule, "k", 10).await.unwrap();
                assert!(d.allowed, "{name}");
                assert_eq!(d.remaining, 100 - 10 * (round + 1), "{name} {rule:?}");
            }
            sluice_tests::flush_scripts(spec);
        }
    }
}

sluice_tests::topology_test! {
    #[tokio::test]
    async fn entries_in_the_same_microsecond_stay_distinct(name, spec) {
        let (limiter, _clock) = manual(spec, "same-us").await;
        let rule = Rule::sliding_log("s", 50, SEC).unwrap();
        let mut conn = handle(spec).await;
        for cost in [1, 2, 3, 4] {
            assert!(limiter.check(&rule, "k", cost).await.unwrap().allowed);
        }
        let card: i64 = redis::cmd("ZCARD")
            .arg(limiter.redis_key(&rule, "k"))
            .query_async(&mut conn)
            .await
            .unwrap();
        // One member per admission, whatever its cost.
        assert_eq!(card, 4, "{name}: admissions at one instant collapsed");
        assert_eq!(limiter.peek(&rule, "k").await.unwrap().remaining, 40);
    }
}

sluice_tests::topology_test! {
    /// The local fallback mirrors the scripts: same answers on the same clock, step by step.
    #[tokio::test]
    async fn local_fallback_matches_the_scripts(name, spec) {
        let (remote, clock) = manual(spec, "differential").await;
        let local = local_only(&clock);
        let rules = [
            Rule::sliding_log("d", 7, 300 * MS).unwrap(),
            Rule::sliding_counter("d", 7, 300 * MS, 30 * MS).unwrap(),
            Rule::sliding_counter("d1", 7, 300 * MS, 300 * MS).unwrap(),
            Rule::gcra("d", 7, 300 * MS, 3).unwrap(),
            Rule::fixed_window("d", 7, 300 * MS).unwrap(),
            Rule::fixed_window("d7", 7, 7 * MS).unwrap(),
        ];
        let mut next = xorshift(0x5eed);
        for rule in &rules {
            for step in 0..400 {
                clock.advance(Duration::from_micros(next(40_000)));
                let cost = 1 + next(3).min(rule.capacity() - 1);
                let cost = (next(5) != 0).then_some(cost);
                let context = format!("{name} {rule:?} step {step}");
                assert_same_answer(&remote, &local, rule, cost, &context).await;
            }
        }
    }
}

sluice_tests::topology_test! {
    /// docs/LIMITER.md, "worst case": a burst of L at the very end of one sub-bucket, then a burst
    /// W later, when that sub-bucket has almost faded out, puts L + floor(phi * L) = 2L - 1 units
    /// into one window of length W, for any N. The bound is reached, never passed.
    #[tokio::test]
    async fn sliding_counter_worst_case_matches_the_derivation(name, spec) {
        for buckets in [1u32, 10, 100] {
            let (limiter, clock) = manual(spec, "worst").await;
            let limit = 10;
            let g = SEC / buckets;
            let rule = Rule::sliding_counter("w", limit, SEC, g).unwrap();
            // End of a sub-bucket: 1 µs before a multiple of g.
            let start = clock.now_us();
            let g_us = g.as_micros() as u64;
            let t1 = (start / g_us + 2) * g_us - 1;
            clock.set_us(t1);
            let mut admitted = Vec::new();
            for _ in 0..limit {
                assert!(limiter.check(&rule, "k", 1).await.unwrap().allowed);
                admitted.push(t1);
            }
            // W - 1 µs later: the window (t2 - W, t2] still holds t1, and phi = 1 - 2/g_us.
            let t2 = t1 + SEC.as_micros() as u64 - 1;
            clock.set_us(t2);
            for _ in 0..2 * limit {
                if limiter.check(&rule, "k", 1).await.unwrap().allowed {
                    admitted.push(t2);
                }
            }
            let in_window = admitted
                .iter()
                .filter(|&&t| t + SEC.as_micros() as u64 > t2)
                .count();
            let phi = (t2 % g_us) as f64 / g_us as f64;
            let bound = limit as usize + (phi * limit as f64).floor() as usize;
            assert_eq!(bound, 2 * limit as usize - 1);
            assert_eq!(
                in_window, bound,
                "{name} N = {buckets}: the derived worst case is exact"
            );
        }
    }
}

sluice_tests::topology_test! {
    /// Concurrent checks coalesced into batched script calls give exactly what one-by-one calls
    /// give: on a sliding log of 50, 200 concurrent requests admit exactly 50, and the remaining
    /// counts they report are 49, 48, ..., 0, each once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn coalesced_checks_match_sequential_semantics(name, spec) {
        let limiter = live(spec, "coalesce").await;
        let rule = Rule::sliding_log("c", 50, 60 * SEC).unwrap();
        let calls = (0..200).map(|_| {
            let limiter = limiter.clone();
            let rule = rule.clone();
            tokio::spawn(async move { limiter.check(&rule, "hot", 1).await.unwrap() })
        });
        let mut remaining: Vec<u64> = Vec::new();
        let mut denied = 0;
        for call in calls.collect::<Vec<_>>() {
            let d = call.await.unwrap();
            if d.allowed {
                remaining.push(d.remaining);
            } else {
                denied += 1;
                assert!(d.retry_after.unwrap() > 59 * SEC, "{name}: {d:?}");
            }
        }
        remaining.sort_unstable();
        assert_eq!(remaining, (0..50).collect::<Vec<u64>>(), "{name}");
        assert_eq!(denied, 150, "{name}");
        // Peeks ride the same batches and charge nothing.
        let peeks = (0..20).map(|_| {
            let limiter = limiter.clone();
            let rule = rule.clone();
            tokio::spawn(async move { limiter.peek(&rule, "fresh").await.unwrap() })
        });
        for p in peeks.collect::<Vec<_>>() {
            assert_eq!(p.await.unwrap().remaining, 50, "{name}");
        }
    }
}

sluice_tests::topology_test! {
    /// Issue 8: GCRA with limit 3 per 3001 ms answered remaining 1 on its first call: the TAT was
    /// rounded up to a whole µs at every admission, the errors added up, and an idle key admitted
    /// burst - 1. Property, over odd windows and limits, on Redis and on the local mirror alike:
    /// an idle key admits exactly `burst` at one instant, `remaining` counts down burst-1 .. 0,
    /// the denial's retry_after is one emission interval rounded up, and exactly one unit is
    /// admitted at that time.
    #[tokio::test]
    async fn gcra_remaining_is_exact_for_odd_windows_and_limits(name, spec) {
        let (remote, clock) = manual(spec, "gcra-exact").await;
        let local = local_only(&clock);
        let mut next = xorshift(0x9c7a);
        let mut cases = vec![(3, 3001 * MS, 3), (7, 300 * MS, 3)];
        for _ in 0..40 {
            let limit = 1 + next(1000);
            let window = Duration::from_micros(1000 + 2 * next(5_000_000) + 1); // odd µs
            let burst = 1 + next(limit);
            cases.push((limit, window, burst));
        }
        for (i, (limit, window, burst)) in cases.into_iter().enumerate() {
            let rule = Rule::gcra("exact", limit, window, burst).unwrap();
            let key = format!("k{i}");
            let interval_us = (window.as_micros() as u64).div_ceil(limit);
            for limiter in [&remote, &local] {
                for left in (0..burst).rev() {
                    let d = limiter.check(&rule, &key, 1).await.unwrap();
                    assert!(d.allowed, "{name} {rule:?}: admission {} of {burst}", burst - left);
                    assert_eq!(d.remaining, left, "{name} {rule:?} ({:?})", d.source);
                }
                let denied = limiter.check(&rule, &key, 1).await.unwrap();
                assert!(!denied.allowed, "{name} {rule:?}: more than burst at once");
                assert_eq!(
                    denied.retry_after,
                    Some(Duration::from_micros(interval_us)),
                    "{name} {rule:?} ({:?})",
                    denied.source
                );
            }
            clock.advance(Duration::from_micros(interval_us));
            for limiter in [&remote, &local] {
                assert!(limiter.check(&rule, &key, 1).await.unwrap().allowed, "{name} {rule:?}");
                assert!(!limiter.check(&rule, &key, 1).await.unwrap().allowed, "{name} {rule:?}");
            }
            // Let the key go idle before the next case's clock.
            clock.advance(window * 2);
        }
    }
}

sluice_tests::topology_test! {
    /// A clock that steps back (a failover to a server with a slower clock; here the injected
    /// clock) must not let the sliding log admit past its limit: entries keep admission order.
    #[tokio::test]
    async fn sliding_log_holds_its_limit_when_the_clock_steps_back(name, spec) {
        let (remote, clock) = manual(spec, "log-back").await;
        let local = local_only(&clock);
        let rule = Rule::sliding_log("back", 3, 10 * SEC).unwrap();
        for limiter in [&remote, &local] {
            let start = clock.now_us();
            assert!(limiter.check(&rule, "k", 1).await.unwrap().allowed, "{name}");
            clock.set_us(start - 500_000);
            let mut admitted = 1;
            for _ in 0..4 {
                if limiter.check(&rule, "k", 1).await.unwrap().allowed {
                    admitted += 1;
                }
                clock.advance(Duration::from_micros(1));
            }
            assert_eq!(admitted, 3, "{name}: the limit held across the step back");
            clock.set_us(start + 30_000_000);
        }
    }
}
