//! A producer and a worker pool, end to end: `cargo run -p sluice-dispatcher --example jobs_demo
//! -- redis://127.0.0.1:6379 [jobs]` (a cluster: `redis+cluster://host:port,...`).
//!
//! Enqueues `jobs` (default 1000) jobs, one in ten failing once; runs a pool of two workers
//! with concurrency 8; prints stats while it drains, then the reports, as JSON lines.

use std::{error::Error, time::Duration};

use serde::{Deserialize, Serialize};
use sluice_dispatcher::{Dispatcher, Job, JobError, TopicConfig, WorkerConfig};
use sluice_shared::{Keyspace, RedisConfig};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Serialize, Deserialize)]
struct Resize {
    image: u32,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let jobs: u32 = args.next().map(|n| n.parse()).transpose()?.unwrap_or(1000);
    let prefix = format!("demo-{}", std::process::id());
    let dispatcher = Dispatcher::connect(RedisConfig::parse(&url)?, Keyspace::new(prefix)?).await?;
    let topic = TopicConfig::new("images")?;

    let producer = dispatcher.producer::<Resize>(&topic);
    let batch: Vec<Resize> = (0..jobs).map(|image| Resize { image }).collect();
    for chunk in batch.chunks(500) {
        producer.enqueue_batch(chunk).await?;
    }
    println!("{}", serde_json::json!({ "enqueued": jobs }));

    let shutdown = CancellationToken::new();
    let mut pool = Vec::new();
    for i in 0..2 {
        let config = WorkerConfig::new("thumbnails")?
            .set_consumer(format!("demo-worker-{i}"))?
            .set_concurrency(8)?;
        let worker = dispatcher.worker(&topic, config, |job: Job<Resize>| async move {
            if job.payload().image % 10 == 0 && job.attempt() == 1 {
                return Err(JobError::retry_after(
                    "storage busy",
                    Duration::from_millis(100),
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            Ok(())
        });
        pool.push(tokio::spawn(worker.run(shutdown.clone())));
    }
    for _ in 0..600 {
        let stats = dispatcher.stats("images").await?;
        println!("{}", serde_json::to_string(&stats)?);
        let idle = stats
            .groups
            .iter()
            .all(|g| g.pending == 0 && g.lag == Some(0) && g.delayed == 0);
        if idle && !stats.groups.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    shutdown.cancel();
    for worker in pool {
        let report = worker.await??;
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}
