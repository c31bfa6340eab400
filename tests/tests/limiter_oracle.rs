//! The concurrency oracle: 64 tasks over two connections hammer one key; from the Redis
//! timestamps of the admitted requests we check that no window admitted more than the rule
//! allows, and that the limiter is not stricter than the rule either.
#![allow(clippy::unwrap_used)]

mod limiter_support;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use limiter_support::*;
use sluice_limiter::{Limiter, Rule};
use tokio::sync::Mutex;

const TASKS: usize = 64;
const RUN: Duration = Duration::from_millis(1500);
const MAX_CALLS_PER_TASK: usize = 20_000;

/// Admission times (µs, Redis clock) of every admitted request, sorted, and the call count.
async fn hammer(spec: &str, rule: &Rule) -> (Vec<u64>, usize) {
    let prefix = sluice_tests::unique_prefix("oracle");
    let mut limiters = Vec::new();
    for _ in 0..2 {
        limiters.push(
            Limiter::builder(handle(spec).await)
                .prefix(&prefix)
                .unwrap()
                .timeout(Duration::from_secs(5))
                .unwrap()
                .build(),
        );
    }
    let admitted = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let deadline = Instant::now() + RUN;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let limiter = limiters[t % 2].clone();
        let rule = rule.clone();
        let admitted = admitted.clone();
        let calls = calls.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..MAX_CALLS_PER_TASK {
                if Instant::now() >= deadline {
                    break;
                }
                let d = limiter.check(&rule, "hot", 1).await.unwrap();
                calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if d.allowed {
                    mine.push(d.time_us);
                }
            }
            admitted.lock().await.extend(mine);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut times = Arc::try_unwrap(admitted).unwrap().into_inner();
    times.sort_unstable();
    (times, calls.load(std::sync::atomic::Ordering::Relaxed))
}

/// For each admission t, the number of admissions in (t - W, t].
fn window_counts(times: &[u64], window: u64) -> Vec<usize> {
    let mut lo = 0;
    let mut hi = 0;
    times
        .iter()
        .map(|&t| {
            while hi < times.len() && times[hi] <= t {
                hi += 1;
            }
            while times[lo] + window <= t {
                lo += 1;
            }
            hi - lo
        })
        .collect()
}

fn span_us(times: &[u64]) -> f64 {
    (times[times.len() - 1] - times[0]) as f64
}

/// The limiter is not stricter than the rule: it admitted at least `fair` requests.
fn assert_not_too_strict(name: &str, times: &[u64], fair: f64) {
    assert!(
        times.len() as f64 >= fair,
        "{name}: admitted {} < {fair:.0}: too strict",
        times.len()
    );
}

sluice_tests::topology_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sliding_log_never_exceeds_its_limit_in_any_window(name, spec) {
        let rule = Rule::sliding_log("oracle", 40, 250 * MS).unwrap();
        let (times, calls) = hammer(spec, &rule).await;
        let w = rule.window().as_micros() as u64;
        let worst = window_counts(&times, w).into_iter().max().unwrap();
        eprintln!(
            "{name}: {calls} calls, {} admitted, busiest window {worst}",
            times.len()
        );
        assert!(worst <= 40, "{name}: a window admitted {worst} > 40");
        let fair = 0.9 * 40.0 * span_us(&times) / w as f64;
        assert_not_too_strict(name, &times, fair);
    }
}

sluice_tests::topology_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sliding_counter_stays_within_its_documented_bound(name, spec) {
        let (limit, n) = (40u64, 10u64);
        let rule = Rule::sliding_counter("oracle", limit, 250 * MS, 25 * MS).unwrap();
        let (times, calls) = hammer(spec, &rule).await;
        let w = rule.window().as_micros() as u64;
        let g = w / n;
        let per_bucket = |bucket: u64| times.iter().filter(|&&t| t / g == bucket).count() as f64;
        let mut worst_over = 0i64;
        for (&t, count) in times.iter().zip(window_counts(&times, w)) {
            // docs/LIMITER.md: any window (t - W, t] ending at an admission holds at most
            // L + floor(phi * c), c = admissions of the bucket straddling the window's start.
            let phi = (t % g) as f64 / g as f64;
            let bound = limit as f64 + (phi * per_bucket(t / g - n) + 1e-6).floor();
            assert!(
                count as f64 <= bound,
                "{name}: window ending {t} admitted {count} > {bound}"
            );
            worst_over = worst_over.max(count as i64 - limit as i64);
        }
        assert!(
            worst_over < limit as i64,
            "{name}: over-admission {worst_over} beyond L - 1"
        );
        eprintln!(
            "{name}: {calls} calls, {} admitted, worst over-admission {worst_over} ({:.1}% of the limit)",
            times.len(),
            100.0 * worst_over as f64 / limit as f64
        );
        let fair = 0.9 * limit as f64 * span_us(&times) / w as f64;
        assert_not_too_strict(name, &times, fair);
    }
}

sluice_tests::topology_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gcra_never_exceeds_rate_and_burst(name, spec) {
        let (limit, burst) = (40u64, 8u64);
        let rule = Rule::gcra("oracle", limit, 250 * MS, burst).unwrap();
        let (times, calls) = hammer(spec, &rule).await;
        let interval = rule.window().as_micros() as f64 / limit as f64;
        // Any run of admissions i..=j must satisfy (j - i + 1) <= burst + (t_j - t_i) / T.
        let mut min_prefix = f64::INFINITY;
        let mut worst = f64::NEG_INFINITY;
        for (j, &t) in times.iter().enumerate() {
            let x = j as f64 - t as f64 / interval;
            min_prefix = min_prefix.min(x);
            worst = worst.max(x - min_prefix + 1.0);
        }
        eprintln!(
            "{name}: {calls} calls, {} admitted, worst burst {worst:.3} (allowed {burst})",
            times.len()
        );
        assert!(
            worst <= burst as f64 + 1e-6,
            "{name}: GCRA admitted a burst of {worst}"
        );
        let fair = 0.9 * (burst as f64 + span_us(&times) / interval);
        assert_not_too_strict(name, &times, fair);
    }
}

sluice_tests::topology_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fixed_window_never_exceeds_its_limit_in_any_aligned_window(name, spec) {
        let limit = 40u64;
        let rule = Rule::fixed_window("oracle", limit, 250 * MS).unwrap();
        let (times, calls) = hammer(spec, &rule).await;
        let w = rule.window().as_micros() as u64;
        // Admissions per aligned window [kW, (k+1)W), from the Redis timestamps.
        let mut per_window = std::collections::BTreeMap::<u64, u64>::new();
        for &t in &times {
            *per_window.entry(t / w).or_default() += 1;
        }
        let worst = per_window.values().copied().max().unwrap();
        // Across a boundary up to twice the limit fits in one window's length.
        let sliding = window_counts(&times, w).into_iter().max().unwrap();
        eprintln!(
            "{name}: {calls} calls, {} admitted in {} windows, busiest aligned window {worst}, \
             busiest window of length W {sliding}",
            times.len(),
            per_window.len()
        );
        assert!(worst <= limit, "{name}: an aligned window admitted {worst} > {limit}");
        assert!(sliding as u64 <= 2 * limit, "{name}: {sliding} in one window's length");
        // Not too strict: every aligned window the run covered whole admitted the limit.
        let (first, last) = (times[0] / w, times[times.len() - 1] / w);
        for k in first + 1..last {
            let n = per_window.get(&k).copied().unwrap_or(0);
            assert!(n as f64 >= 0.9 * limit as f64, "{name}: window {k} admitted only {n}");
        }
    }
}
