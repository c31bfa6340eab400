//! Redis memory per limiter key, measured with `MEMORY USAGE <key> SAMPLES 0`.
//!
//! `cargo run -p sluice-examples --example limiter_memory -- redis://127.0.0.1:6379`
//!
//! Prints a Markdown table (docs/LIMITER.md quotes it). An injected clock places admissions in
//! as many sub-buckets as the state column says, without waiting for real time to pass.

use std::time::Duration;

use sluice_limiter::{Algorithm, Clock, Limiter, ManualClock, Rule};
use sluice_shared::{RedisConfig, RedisHandle};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let mut conn = RedisHandle::connect(&RedisConfig::parse(&url)?).await?;
    let clock = ManualClock::new(1_700_000_000_000_000);
    let limiter = Limiter::builder(conn.clone())
        .prefix("memprobe")?
        .clock(Clock::Manual(clock.clone()))
        .build();
    let sec = Duration::from_secs(1);
    let min = Duration::from_secs(60);
    // (rule, units, spread them: one per sub-bucket, or one cost-1 admission each for the log)
    let cases: Vec<(Rule, u64, bool)> = vec![
        (Rule::sliding_log("m", 10, min)?, 10, true),
        (Rule::sliding_log("m", 100, min)?, 100, true),
        (Rule::sliding_log("m", 1000, min)?, 1000, true),
        (Rule::sliding_log("m", 1000, min)?, 1000, false),
        (Rule::sliding_counter("m", 1000, min, min)?, 1000, false),
        (
            Rule::sliding_counter("m", 1000, min, Duration::from_secs(6))?,
            10,
            true,
        ),
        (
            Rule::sliding_counter("m", 1000, sec, Duration::from_millis(10))?,
            100,
            true,
        ),
        (
            Rule::sliding_counter("m", 100_000, sec, Duration::from_millis(1))?,
            1000,
            true,
        ),
        (Rule::gcra("m", 1000, min, 100)?, 100, false),
        (Rule::fixed_window("m", 1000, min)?, 100, false),
        (
            Rule::fixed_window("m", 1 << 40, Duration::from_secs(86_400))?,
            1 << 40,
            false,
        ),
    ];
    println!("| rule | state | MEMORY USAGE (bytes) |\n|---|---|---|");
    for (i, (rule, units, spread)) in cases.iter().enumerate() {
        let key = format!("probe-{i}");
        limiter.reset(rule, &key).await?;
        let state = match (rule.granularity(), spread) {
            (Some(granularity), true) => {
                for _ in 0..*units {
                    limiter.check(rule, &key, 1).await?;
                    clock.advance(granularity);
                }
                format!("{units} sub-buckets in use")
            }
            (None, true) => {
                for _ in 0..*units {
                    limiter.check(rule, &key, 1).await?;
                }
                format!("{units} admissions of cost 1")
            }
            _ => {
                limiter.check(rule, &key, *units).await?;
                match rule.algorithm() {
                    Algorithm::SlidingLog => format!("1 admission of cost {units}"),
                    Algorithm::SlidingCounter => "1 sub-bucket in use".to_owned(),
                    Algorithm::Gcra => "any".to_owned(),
                    Algorithm::FixedWindow => format!("a count of {units}"),
                    other => format!("{units} units of {other}"),
                }
            }
        };
        let bytes: Option<i64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(limiter.redis_key(rule, &key))
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut conn)
            .await?;
        println!("| {rule:?} | {state} | {} |", bytes.unwrap_or(0));
        limiter.reset(rule, &key).await?;
    }
    Ok(())
}
