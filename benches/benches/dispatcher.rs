//! Dispatcher client-side hot paths: encoding a job into its enqueue command, and decoding
//! delivered stream entries into the jobs handlers get. Both call the code the producer and
//! the worker run (`sluice_dispatcher::bench_support`); no Redis needed.
#![allow(missing_docs, clippy::unwrap_used)]

use std::{hint::black_box, sync::Arc};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};
use sluice_dispatcher::{Dispatcher, TopicConfig, bench_support};
use sluice_shared::{Keyspace, RedisConfig, RedisHandle};

/// A typical small job.
#[derive(Debug, Serialize, Deserialize)]
struct Email {
    to: String,
    template: String,
    user_id: u64,
}

fn email() -> Email {
    Email {
        to: "ada@example.com".to_owned(),
        template: "welcome-v2".to_owned(),
        user_id: 4_242_424_242,
    }
}

fn encode(c: &mut Criterion) {
    // A producer needs a handle; a lazy one never touches the network.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let config = RedisConfig::parse("redis://127.0.0.1:1").unwrap();
    let handle = RedisHandle::connect_lazy(&config).unwrap();
    let dispatcher = Dispatcher::new(config, handle, Keyspace::new("bench").unwrap());
    let topic = TopicConfig::new("emails").unwrap();
    let producer = dispatcher.producer::<Email>(&topic);
    let job = email();

    let mut g = c.benchmark_group("dispatcher/encode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("job to XADD command", |b| {
        b.iter(|| bench_support::enqueue_command(&producer, black_box(&job)).unwrap())
    });
    g.finish();
}

fn decode(c: &mut Criterion) {
    let stream = b"bench:{emails}:stream";
    let retry = b"bench:{emails}:group:mailer:retry";
    let payload = serde_json::to_vec(&email()).unwrap();
    let topic: Arc<str> = Arc::from("emails");
    let group: Arc<str> = Arc::from("mailer");

    let mut g = c.benchmark_group("dispatcher/decode");
    for count in [1usize, 50] {
        let bytes = bench_support::read_reply_bytes(stream, &payload, count);
        let value = redis::parse_redis_value(&bytes).unwrap();
        g.throughput(Throughput::Elements(count as u64));
        g.bench_function(format!("XREADGROUP reply of {count} to jobs"), |b| {
            b.iter_batched(
                || value.clone(),
                |reply| {
                    bench_support::decode_read_reply::<Email>(reply, retry, &topic, &group).unwrap()
                },
                BatchSize::SmallInput,
            )
        });
        g.bench_function(
            format!("RESP bytes of {count} to jobs (with redis-rs parse)"),
            |b| {
                b.iter(|| {
                    let reply = redis::parse_redis_value(black_box(&bytes)).unwrap();
                    bench_support::decode_read_reply::<Email>(reply, retry, &topic, &group).unwrap()
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
