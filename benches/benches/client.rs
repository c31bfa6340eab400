//! Client-side hot paths: building a limiter key, encoding a decision for the wire/logs.
#![allow(missing_docs, clippy::unwrap_used)]

use std::{hint::black_box, time::Duration};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_limiter::Rule;
use sluice_shared::Keyspace;

fn keys(c: &mut Criterion) {
    let ks = Keyspace::new("bench").unwrap();
    let rule = Rule::sliding_counter(
        "per-user",
        100,
        Duration::from_secs(1),
        Duration::from_millis(10),
    )
    .unwrap();
    let mut g = c.benchmark_group("keys");
    g.throughput(Throughput::Elements(1));
    g.bench_function("plain id", |b| {
        b.iter(|| {
            ks.key(
                black_box(b"user:123456"),
                &[rule.name(), rule.algorithm().code()],
            )
        })
    });
    g.bench_function("id with tag and braces", |b| {
        b.iter(|| {
            ks.key(
                black_box(b"route:/v1/{x}:{user-42}"),
                &[rule.name(), rule.algorithm().code()],
            )
        })
    });
    g.finish();
}

criterion_group!(benches, keys);
criterion_main!(benches);
