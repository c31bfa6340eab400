//! metrics-scrape-bench: the cost of the dispatcher's queue gauges over 100 topics x 3 groups,
//! on a private standalone server and a private 3-master Cluster started here.
//!
//! ```sh
//! nice -n 19 cargo run --release -p sluice-benches --bin metrics-scrape-bench [-- --rounds 30]
//! ```
//!
//! Per round, interleaved (A B A B ...):
//! - **refresh**: `QueueGauges::refresh`, the Redis side of the gauges (what a background tick,
//!   or a scrape refreshing lazily, costs): two pipelined round trips per topic, the topics in
//!   parallel;
//! - **scrape**: `Registry::gather` plus the text encoding, what `/metrics` costs (served from
//!   the cached snapshot: no Redis);
//! - **stats loop** (the peer): `Dispatcher::stats` of each topic one after another, the
//!   unpipelined way to read the same numbers.
//!
//! Reports the median, p90 and max of each, and the median of the per-round ratios
//! stats loop / refresh. Target: a refresh and a scrape under 50 ms each.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use prometheus::{Encoder, Registry, TextEncoder};
use serde::{Deserialize, Serialize};
use sluice_dispatcher::{Dispatcher, EnqueueOptions, Job, JobError, TopicConfig, WorkerConfig};
use sluice_shared::{Keyspace, RedisConfig};
use sluice_tests::{RedisCluster, RedisServer};

const TOPICS: usize = 100;
const GROUPS: [&str; 3] = ["billing", "shipping", "audit"];
const JOBS_PER_TOPIC: u32 = 20;
/// At most this many rounds, whatever `--rounds` says.
const MAX_ROUNDS: usize = 1000;
const TARGET: Duration = Duration::from_millis(50);

#[derive(Serialize, Deserialize)]
struct Task {
    n: u32,
}

fn topic_name(i: usize) -> String {
    format!("topic-{i:03}")
}

/// 100 topics, each with 3 groups, 20 jobs, 2 delayed; each group has read 5 (pending).
async fn fill(d: &Dispatcher) {
    for i in 0..TOPICS {
        let topic = TopicConfig::new(topic_name(i)).unwrap();
        for g in GROUPS {
            d.worker(
                &topic,
                WorkerConfig::new(g).unwrap(),
                |_: Job<Task>| async { Ok::<(), JobError>(()) },
            )
            .ensure_group()
            .await
            .unwrap();
        }
        let producer = d.producer::<Task>(&topic);
        let jobs: Vec<Task> = (0..JOBS_PER_TOPIC).map(|n| Task { n }).collect();
        producer.enqueue_batch(&jobs).await.unwrap();
        let delayed = EnqueueOptions::new().delay(Duration::from_secs(3600));
        producer
            .enqueue_batch_with([(&Task { n: 0 }, delayed.clone()), (&Task { n: 1 }, delayed)])
            .await
            .unwrap();
        let stream = d.keyspace().key(topic.name().as_bytes(), &["stream"]);
        for g in GROUPS {
            let _: redis::Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(g)
                .arg("bench")
                .arg("COUNT")
                .arg(5)
                .arg("STREAMS")
                .arg(&stream)
                .arg(">")
                .query_async(&mut d.redis().clone())
                .await
                .unwrap();
        }
    }
}

fn quantiles(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.9), v[v.len() - 1])
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn run(topology: &str, spec: &str, rounds: usize) -> bool {
    let config = RedisConfig::parse(spec).unwrap();
    let d = Dispatcher::connect(config, Keyspace::new("bench-metrics").unwrap())
        .await
        .unwrap();
    let started = Instant::now();
    fill(&d).await;
    eprintln!(
        "{topology}: {TOPICS} topics x {} groups filled in {:.1}s",
        GROUPS.len(),
        started.elapsed().as_secs_f64()
    );
    let registry = Registry::new();
    let topics: Vec<String> = (0..TOPICS).map(topic_name).collect();
    let gauges = d.queue_gauges(topics.clone()).unwrap();
    gauges.register(&registry).unwrap();
    // Warm up: connections to every node, the allocator.
    for _ in 0..3 {
        gauges.refresh().await.unwrap();
    }
    let (mut refresh, mut scrape, mut stats, mut ratios) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut bytes = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        gauges.refresh().await.unwrap();
        let a = t.elapsed();
        let t = Instant::now();
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        scrape.push(t.elapsed());
        bytes = out.len();
        let t = Instant::now();
        for topic in &topics {
            let s = d.stats(topic).await.unwrap();
            assert_eq!(s.groups.len(), GROUPS.len());
        }
        let b = t.elapsed();
        refresh.push(a);
        stats.push(b);
        ratios.push(b.as_secs_f64() / a.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    let ratio = ratios[ratios.len() / 2];
    let (r50, r90, rmax) = quantiles(refresh);
    let (s50, s90, smax) = quantiles(scrape);
    let (l50, l90, lmax) = quantiles(stats);
    println!(
        "## {topology}: {TOPICS} topics x {} groups, {rounds} rounds",
        GROUPS.len()
    );
    println!("| | median | p90 | max |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| refresh (Redis, pipelined) | {} | {} | {} |",
        ms(r50),
        ms(r90),
        ms(rmax)
    );
    println!(
        "| scrape (gather + encode, {bytes} bytes) | {} | {} | {} |",
        ms(s50),
        ms(s90),
        ms(smax)
    );
    println!(
        "| peer: stats loop | {} | {} | {} |",
        ms(l50),
        ms(l90),
        ms(lmax)
    );
    println!("median per-round ratio stats loop / refresh: {ratio:.1}x");
    let met = r50 < TARGET && s50 < TARGET;
    println!(
        "target (refresh and scrape under {} ms, median): {}",
        TARGET.as_millis(),
        if met { "met" } else { "NOT met" }
    );
    println!();
    for t in &topics {
        d.delete_topic(t).await.unwrap();
    }
    met
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut rounds = 30usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|r| (1..=MAX_ROUNDS).contains(r))
                    .unwrap_or_else(|| {
                        eprintln!("--rounds: a number of rounds, 1 to {MAX_ROUNDS}");
                        std::process::exit(2)
                    })
            }
            other => {
                eprintln!("unknown argument {other}; usage: metrics-scrape-bench [--rounds N]");
                std::process::exit(2)
            }
        }
    }
    let server = RedisServer::start();
    let standalone = run("standalone", &server.url(), rounds).await;
    drop(server);
    let cluster = RedisCluster::start(3);
    let clustered = run("cluster (3 masters)", &cluster.spec(), rounds).await;
    drop(cluster);
    if !(standalone && clustered) {
        std::process::exit(1);
    }
}
