//! Limiter client hot paths: building the `EVALSHA` of one check (key naming, arguments, RESP
//! encoding), and turning the reply bytes into a `Decision` (RESP parsing, integer conversion,
//! decoding).
#![allow(missing_docs, clippy::unwrap_used)]

use std::{hint::black_box, time::Duration};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_limiter::{Limiter, Rule, bench_support};
use sluice_shared::{Keyspace, RedisConfig, RedisHandle};

fn limiter() -> Limiter {
    // A lazy handle never connects: building commands needs no server.
    let config = RedisConfig::parse("redis://127.0.0.1:1").unwrap();
    Limiter::builder(RedisHandle::connect_lazy(&config).unwrap())
        .prefix("bench")
        .unwrap()
        .build()
}

fn build_call(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let limiter = limiter();
    let rule = Rule::sliding_counter(
        "per-user",
        100,
        Duration::from_secs(1),
        Duration::from_millis(10),
    )
    .unwrap();
    let mut g = c.benchmark_group("build call");
    g.throughput(Throughput::Elements(1));
    g.bench_function("key only", |b| {
        let ks = Keyspace::new("bench").unwrap();
        b.iter(|| {
            ks.key(
                black_box(b"user:123456"),
                &[rule.name(), rule.algorithm().code()],
            )
        })
    });
    g.bench_function("EVALSHA packed", |b| {
        b.iter(|| {
            bench_support::check_command(&limiter, &rule, black_box(b"user:123456"), 1)
                .get_packed_command()
        })
    });
    g.finish();
}

fn decode_reply(c: &mut Criterion) {
    let rule = Rule::sliding_log("per-user", 100, Duration::from_secs(60)).unwrap();
    let resp = b"*7\r\n:1795345577794556\r\n:1\r\n:0\r\n:1\r\n:57\r\n:60000000\r\n:0\r\n";
    let mut g = c.benchmark_group("decode reply");
    g.throughput(Throughput::Elements(1));
    g.bench_function("RESP bytes to Decision", |b| {
        b.iter(|| {
            let value = redis::parse_redis_value(black_box(resp)).unwrap();
            let ints: Vec<i64> = redis::from_redis_value(value).unwrap();
            bench_support::decode_check(&rule, &ints).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, build_call, decode_reply);
criterion_main!(benches);
