//! `serve-drive`: a fixed number of `ShouldRateLimit` calls against a running `sluice serve`,
//! for profiling the service (e.g. under `valgrind --tool=callgrind`, where instructions per
//! call are exact and do not depend on how busy the shared machine is).
//!
//! ```sh
//! serve-drive --grpc 127.0.0.1:PORT [--calls 20000] [--concurrency 50] [--case many|hot|two|unknown]
//! ```
//!
//! The requests are those of `serve-bench` (domain `bench`: `remote_address` over 10k
//! values, `hot`, `route`; `unknown` asks for a domain the config lacks); it prints the calls, the errors and the wall time. Bounded in
//! calls (at most 1,000,000) and in time (60 s).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use sluice_gateway::envoy_types::pb::envoy::{
    extensions::common::ratelimit::v3::{RateLimitDescriptor, rate_limit_descriptor},
    service::ratelimit::v3::{RateLimitRequest, rate_limit_service_client::RateLimitServiceClient},
};

const LIMIT: Duration = Duration::from_secs(60);

fn entry(key: &str, value: String) -> rate_limit_descriptor::Entry {
    rate_limit_descriptor::Entry {
        key: key.to_owned(),
        value,
    }
}

fn request(case: &str, i: u64) -> RateLimitRequest {
    let n = (i.wrapping_mul(7919) % 10_000) as u32;
    let address = format!("10.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255);
    let descriptor = |entries| RateLimitDescriptor {
        entries,
        ..Default::default()
    };
    let descriptors = match case {
        "many" => vec![descriptor(vec![entry("remote_address", address)])],
        "hot" => vec![descriptor(vec![entry("hot", "all".to_owned())])],
        "two" => vec![
            descriptor(vec![entry("remote_address", address)]),
            descriptor(vec![entry("route", format!("/api/v1/r{}", i % 16))]),
        ],
        // A domain the config lacks: answered OK without asking Redis.
        "unknown" => vec![descriptor(vec![entry("remote_address", address)])],
        other => panic!("--case many|hot|two|unknown, not {other}"),
    };
    RateLimitRequest {
        domain: if case == "unknown" {
            "no-such-domain"
        } else {
            "bench"
        }
        .to_owned(),
        descriptors,
        hits_addend: 0,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (mut grpc, mut calls, mut concurrency, mut case) =
        (String::new(), 20_000u64, 50u64, "many".to_owned());
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().expect("a value after each flag");
        match flag.as_str() {
            "--grpc" => grpc = value(),
            "--calls" => calls = value().parse().expect("--calls N"),
            "--concurrency" => concurrency = value().parse().expect("--concurrency N"),
            "--case" => case = value(),
            other => panic!(
                "unknown flag {other} (--grpc ADDR --calls N --concurrency C --case many|hot|two|unknown)"
            ),
        }
    }
    assert!(!grpc.is_empty(), "--grpc HOST:PORT is required");
    assert!((1..=1_000_000).contains(&calls), "--calls 1 to 1000000");
    assert!((1..=1000).contains(&concurrency), "--concurrency 1 to 1000");
    let client = RateLimitServiceClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect to sluice serve");
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (mut client, next, case) = (client.clone(), next.clone(), case.clone());
        tasks.push(tokio::spawn(async move {
            let mut errors = 0u64;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= calls || started.elapsed() > LIMIT {
                    break;
                }
                if client.should_rate_limit(request(&case, i)).await.is_err() {
                    errors += 1;
                }
            }
            errors
        }));
    }
    let mut errors = 0;
    for t in tasks {
        errors += t.await.unwrap();
    }
    let done = next.load(std::sync::atomic::Ordering::Relaxed).min(calls);
    println!(
        "serve-drive: {done} calls ({case}), {errors} errors, {:.2} s",
        started.elapsed().as_secs_f64()
    );
}
