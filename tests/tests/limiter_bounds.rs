//! Issue 8 #4: one call can't make Redis unavailable. A sliding-log check of cost >= 4000 used to
//! fail (`too many results to unpack`) and one of cost 10,000,000 kept Redis busy for ~17 s: the
//! script wrote one member per unit. Every script's work per call is bounded now, whatever the
//! cost, and any cost up to the rule's capacity works.
#![allow(clippy::unwrap_used)]

mod limiter_support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use limiter_support::*;
use sluice_limiter::{Check, MAX_BUCKETS, MAX_LIMIT, Rule, Source};
use sluice_tests::RedisServer;

/// The largest sliding-log limit a rule may have.
const LOG_MAX: u64 = 10_000_000;

/// PINGs every node of `spec` from its own connection until `stop`, at most 20,000 times;
/// returns the slowest answer and how many were sent. A PING that fails or takes over 2 s
/// counts as 2 s.
fn pinger(spec: &str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(Duration, usize)> {
    let urls: Vec<String> = spec.split(',').map(str::to_owned).collect();
    std::thread::spawn(move || {
        let mut conns: Vec<redis::Connection> = urls
            .iter()
            .map(|u| {
                let c = redis::Client::open(u.as_str())
                    .unwrap()
                    .get_connection_with_timeout(Duration::from_secs(2))
                    .unwrap();
                c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                c
            })
            .collect();
        let mut worst = Duration::ZERO;
        let mut sent = 0;
        while !stop.load(Ordering::Relaxed) && sent < 20_000 {
            for c in &mut conns {
                let start = Instant::now();
                let ok = redis::cmd("PING").query::<String>(c).is_ok();
                let took = if ok {
                    start.elapsed()
                } else {
                    Duration::from_secs(2)
                };
                worst = worst.max(took);
                sent += 1;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        (worst, sent)
    })
}

sluice_tests::topology_test! {
    /// A request may cost up to the rule's capacity, on every algorithm, at the largest limits:
    /// it is admitted on an idle key, and then denied with the right retry-after.
    #[tokio::test]
    async fn a_cost_up_to_the_capacity_works(name, spec) {
        let (limiter, clock) = manual(spec, "cost-cap").await;
        for rule in [
            Rule::sliding_log("cap", LOG_MAX, SEC).unwrap(),
            Rule::sliding_log("cap4000", 4000, SEC).unwrap(),
            Rule::sliding_counter("cap", MAX_LIMIT, SEC, 10 * MS).unwrap(),
            // (burst + cost) x window stays below 2^53 µs, where GCRA is exact.
            Rule::gcra("cap", MAX_LIMIT, MS, MAX_LIMIT).unwrap(),
            // The clock starts on a whole second: the window ends one window later.
            Rule::fixed_window("cap", MAX_LIMIT, SEC).unwrap(),
        ] {
            let cap = rule.capacity();
            // Everything has left the window by then (the counter fades over one sub-bucket).
            let longest = rule.window() + rule.granularity().unwrap_or_default();
            let d = limiter.check(&rule, "k", cap).await.unwrap();
            assert!(d.allowed, "{name} {rule:?}: {d:?}");
            assert_eq!((d.remaining, d.source), (0, Source::Redis), "{name} {rule:?}");
            let d = limiter.check(&rule, "k", 1).await.unwrap();
            assert!(!d.allowed, "{name} {rule:?}: {d:?}");
            assert!(d.retry_after.unwrap() <= longest, "{name} {rule:?}: {d:?}");
            let d = limiter.check(&rule, "k", cap).await.unwrap();
            assert!(!d.allowed, "{name} {rule:?}");
            let retry = d.retry_after.unwrap();
            assert!(
                rule.window() <= retry && retry <= longest,
                "{name} {rule:?}: {d:?}"
            );
        }
        // The log, exactly: after the window, the whole capacity is back.
        let rule = Rule::sliding_log("cap", LOG_MAX, SEC).unwrap();
        clock.advance(SEC);
        let d = limiter.check(&rule, "k", LOG_MAX).await.unwrap();
        assert!(d.allowed && d.remaining == 0, "{name}: {d:?}");
    }
}

sluice_tests::topology_test! {
    /// While the largest calls each algorithm allows run back to back (cost = limit on the
    /// largest sliding log, admitted and denied; a denial that must search a log of many
    /// small entries; a counter of MAX_BUCKETS sub-buckets evicting a whole window of them),
    /// every PING from another connection is answered within 50 ms.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ping_is_answered_during_the_largest_calls(name, spec) {
        let (limiter, clock) = manual(spec, "ping").await;
        let stop = Arc::new(AtomicBool::new(false));
        let ping = pinger(spec, Arc::clone(&stop));
        let mut slowest = Duration::ZERO;
        let mut timed = |start: Instant| slowest = slowest.max(start.elapsed());

        let log = Rule::sliding_log("big", LOG_MAX, SEC).unwrap();
        for round in 0..3u64 {
            let key = format!("k{round}");
            let start = Instant::now();
            assert!(limiter.check(&log, &key, LOG_MAX).await.unwrap().allowed, "{name}");
            assert!(!limiter.check(&log, &key, LOG_MAX).await.unwrap().allowed, "{name}");
            timed(start);
        }
        // 300 small admissions, then a denial of cost LOG_MAX: retry-after is where the last
        // of them leaves, found by a bounded search.
        let small = Rule::sliding_log("small", LOG_MAX, 10 * SEC).unwrap();
        let many = Rule::sliding_log("many", 300, 10 * SEC).unwrap();
        for i in 0..300 {
            clock.advance(MS);
            assert!(limiter.check(&many, "m", 1).await.unwrap().allowed, "{name} {i}");
            limiter.check(&small, "m", 1).await.unwrap();
        }
        let start = Instant::now();
        let d = limiter.check(&many, "m", 300).await.unwrap();
        timed(start);
        assert_eq!(d.retry_after, Some(10 * SEC), "{name}: {d:?}");
        let d = limiter.check(&small, "m", LOG_MAX).await.unwrap();
        assert_eq!(d.retry_after, Some(10 * SEC), "{name}: {d:?}");

        // The fixed window at the largest limit, and one mixed check of every algorithm at its
        // capacity (the largest log among them), admitted then denied.
        let fixed = Rule::fixed_window("big", MAX_LIMIT, SEC).unwrap();
        let ctr_cap = Rule::sliding_counter("big", MAX_LIMIT, SEC, MS).unwrap();
        let gcra_cap = Rule::gcra("big", MAX_LIMIT, MS, MAX_LIMIT).unwrap();
        let mixed = [
            Check::new(&log, "{x}1").cost(LOG_MAX),
            Check::new(&ctr_cap, "{x}2").cost(MAX_LIMIT),
            Check::new(&gcra_cap, "{x}3").cost(MAX_LIMIT),
            Check::new(&fixed, "{x}4").cost(MAX_LIMIT),
        ];
        for round in 0..3 {
            clock.advance(10 * SEC);
            let start = Instant::now();
            assert!(limiter.check(&fixed, "f", MAX_LIMIT).await.unwrap().allowed, "{name}");
            assert!(!limiter.check(&fixed, "f", MAX_LIMIT).await.unwrap().allowed, "{name}");
            assert!(limiter.check_all(&mixed).await.unwrap().allowed, "{name} {round}");
            assert!(!limiter.check_all(&mixed).await.unwrap().allowed, "{name} {round}");
            timed(start);
        }

        // The counter at MAX_BUCKETS sub-buckets: units in its first and last sub-bucket, then
        // a call one window later evicts every sub-bucket in between.
        let window = Duration::from_micros(10 * MAX_BUCKETS);
        let ctr = Rule::sliding_counter("ctr", MAX_LIMIT, window, Duration::from_micros(10))
            .unwrap();
        for _ in 0..3 {
            limiter.check(&ctr, "c", 1).await.unwrap();
            clock.advance(window - Duration::from_micros(10));
            limiter.check(&ctr, "c", 1).await.unwrap();
            clock.advance(window - Duration::from_micros(10));
            let start = Instant::now();
            limiter.check(&ctr, "c", MAX_LIMIT).await.unwrap();
            timed(start);
            clock.advance(3 * window);
        }
        // Dense: every one of the MAX_BUCKETS sub-buckets holds units (written as the script
        // writes them), and a call one window later evicts them all but one.
        let key = limiter.redis_key(&ctr, "dense");
        let b0 = clock.now_us() / 10;
        let mut hset = redis::cmd("HSET");
        hset.arg(&key);
        for b in b0..b0 + MAX_BUCKETS {
            hset.arg(b).arg(1);
        }
        hset.arg("t").arg(MAX_BUCKETS).arg("o").arg(b0).arg("l").arg(b0 + MAX_BUCKETS - 1);
        hset.arg("g").arg(10);
        let mut conn = handle(spec).await;
        let _: i64 = hset.query_async(&mut conn).await.unwrap();
        let _: i64 = redis::cmd("PEXPIRE").arg(&key).arg(60_000).query_async(&mut conn).await.unwrap();
        clock.advance(2 * window - Duration::from_micros(10));
        let start = Instant::now();
        let d = limiter.check(&ctr, "dense", 1).await.unwrap();
        timed(start);
        assert!(d.allowed, "{name}: {d:?}");
        stop.store(true, Ordering::Relaxed);
        let (worst, sent) = ping.join().unwrap();
        eprintln!("{name}: slowest call {slowest:?}, slowest PING {worst:?} of {sent}");
        assert!(sent > 0, "{name}");
        assert!(
            worst < 50 * MS,
            "{name}: a PING waited {worst:?} behind a limiter call"
        );
        assert!(slowest < 500 * MS, "{name}: a call took {slowest:?}");
    }
}

sluice_tests::topology_test! {
    /// Costs larger than one: the scripts' running totals and bounded searches give the same
    /// answers as the in-process mirror, field by field.
    #[tokio::test]
    async fn sliding_log_large_costs_match_the_mirror(name, spec) {
        let (remote, clock) = manual(spec, "log-costs").await;
        let local = local_only(&clock);
        let rule = Rule::sliding_log("costs", 50, 300 * MS).unwrap();
        let mut next = xorshift(0xc057);
        for step in 0..400 {
            clock.advance(Duration::from_micros(next(30_000)));
            let cost = if next(4) == 0 { 1 + next(50) } else { 1 + next(3) };
            let cost = (next(6) != 0).then_some(cost);
            assert_same_answer(&remote, &local, &rule, cost, &format!("{name} step {step}")).await;
        }
    }
}

sluice_tests::topology_test! {
    /// State written by the earlier format (one member `<time>-<n>` per unit) is read as it
    /// was meant: each legacy member is one unit, new admissions count on top of them, and
    /// they leave the window on time.
    #[tokio::test]
    async fn sliding_log_reads_state_in_the_earlier_format(name, spec) {
        let (limiter, clock) = manual(spec, "legacy").await;
        let rule = Rule::sliding_log("legacy", 10, SEC).unwrap();
        let key = limiter.redis_key(&rule, "k");
        let mut conn = handle(spec).await;
        let t0 = clock.now_us();
        // What the earlier script wrote for a cost-3 then a cost-2 admission 100 ms apart.
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(&key);
        for n in 1..=3 {
            zadd.arg(t0).arg(format!("{t0}-{n}"));
        }
        for n in 4..=5 {
            zadd.arg(t0 + 100_000).arg(format!("{}-{n}", t0 + 100_000));
        }
        let _: i64 = zadd.query_async(&mut conn).await.unwrap();
        let _: i64 = redis::cmd("PEXPIRE")
            .arg(&key)
            .arg(60_000)
            .query_async(&mut conn)
            .await
            .unwrap();
        clock.advance(200 * MS);
        let d = limiter.peek(&rule, "k").await.unwrap();
        assert_eq!(d.remaining, 5, "{name}: legacy units counted");
        assert_eq!(d.reset_after, 900 * MS, "{name}");
        let d = limiter.check(&rule, "k", 4).await.unwrap();
        assert!(d.allowed && d.remaining == 1, "{name}: {d:?}");
        let d = limiter.check(&rule, "k", 3).await.unwrap();
        assert!(!d.allowed, "{name}");
        // 2 units must leave: the 2nd legacy unit, at t0 + 1 s.
        assert_eq!(d.retry_after, Some(800 * MS), "{name}: {d:?}");
        let d = limiter.check(&rule, "k", 5).await.unwrap();
        // 4 units must leave: the 4th is the first of the cost-2 legacy admission.
        assert_eq!(d.retry_after, Some(900 * MS), "{name}: {d:?}");
        let d = limiter.check(&rule, "k", 7).await.unwrap();
        // 6 units must leave: past the legacy ones, into the new cost-4 admission.
        assert_eq!(d.retry_after, Some(SEC), "{name}: {d:?}");
        // The cost-3 legacy admission leaves.
        clock.advance(800 * MS);
        let d = limiter.check(&rule, "k", 3).await.unwrap();
        assert!(d.allowed && d.remaining == 1, "{name}: {d:?}");
        // The cost-2 one too: 4 + 3 units live.
        clock.advance(100 * MS);
        assert_eq!(limiter.peek(&rule, "k").await.unwrap().remaining, 3, "{name}");
        clock.advance(SEC);
        assert_eq!(limiter.peek(&rule, "k").await.unwrap().remaining, 10, "{name}");
    }
}

sluice_tests::topology_test! {
    /// A busy key's set holds at most about one member per live admission: expired members are
    /// evicted as admissions go on, a bounded number per call.
    #[tokio::test]
    async fn sliding_log_memory_follows_the_live_admissions(name, spec) {
        let (limiter, clock) = manual(spec, "log-mem").await;
        let rule = Rule::sliding_log("mem", 100, 100 * MS).unwrap();
        let key = limiter.redis_key(&rule, "k");
        let mut conn = handle(spec).await;
        for _ in 0..600 {
            clock.advance(MS);
            assert!(limiter.check(&rule, "k", 1).await.unwrap().allowed);
        }
        let card: u64 = redis::cmd("ZCARD")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        // 100 live, plus fewer than 8 expired ones awaiting the next eviction.
        assert!((100..108).contains(&card), "{name}: {card} members");
    }
}

/// `INFO commandstats` calls of the commands scripts run (everything but the script calls and
/// the stats commands themselves), summed.
fn data_calls(conn: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    info.lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        // `config|resetstat`, `script|load`: a subcommand's stats carry its command's name.
        .filter(|l| {
            let command = l.split([':', '|']).next().unwrap_or_default();
            ![
                "evalsha", "eval", "script", "info", "config", "ping", "hello", "client",
            ]
            .contains(&command)
        })
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// The `redis.call`s behind one decision, counted by the server on a private standalone
/// server (docs/LIMITER.md quotes them): the fixed window reads one string and, when it
/// admits, writes it; a mixed check makes exactly the calls its rules make alone.
#[tokio::test]
async fn redis_calls_per_decision() {
    let server = RedisServer::start();
    let (limiter, clock) = manual(&server.url(), "calls").await;
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut calls = async |checks: &[Check<'_>]| {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query(&mut conn)
            .unwrap();
        let m = limiter.check_all(checks).await.unwrap();
        (m.allowed, data_calls(&mut conn))
    };
    let fixed = Rule::fixed_window("f", 1, SEC).unwrap();
    let gcra = Rule::gcra("g", 1, SEC, 1).unwrap();
    let one = |rule| [Check::new(rule, "{k}")];
    assert_eq!(
        calls(&one(&fixed)).await,
        (true, 2),
        "fixed window admitted: GET + SET"
    );
    assert_eq!(
        calls(&one(&fixed)).await,
        (false, 1),
        "fixed window denied: GET"
    );
    assert_eq!(
        calls(&one(&gcra)).await,
        (true, 2),
        "gcra admitted: GET + SET"
    );
    clock.advance(SEC);
    let both = [Check::new(&fixed, "{k}"), Check::new(&gcra, "{k}")];
    assert_eq!(calls(&both).await, (true, 4), "mixed, admitted: the sum");
    assert_eq!(calls(&both).await, (false, 2), "mixed, denied: the sum");
}
