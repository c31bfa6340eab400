//! Crash recovery with real processes: 20,000 jobs, three worker processes, `kill -9` three
//! times mid-run (two replacements started), and an oracle over the handlers' completion logs
//! and the dead-letter stream: every job completed or dead-lettered, none lost; duplicates are
//! counted and printed. One test case on standalone, one on Cluster.
//!
//! The test binary is its own worker: started with `SLUICE_CRASH_WORKER` set, the same test
//! function runs one worker process instead of the scenario.
#![allow(clippy::unwrap_used)]

mod dispatcher_support;

use std::{
    collections::HashSet,
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use sluice_dispatcher::{DeadReason, Dispatcher, Job, JobError, TopicConfig, WorkerConfig};
use sluice_shared::{Keyspace, RedisConfig};
use tokio_util::sync::CancellationToken;

const WORKER_ENV: &str = "SLUICE_CRASH_WORKER";
const JOBS: u32 = 20_000;
const TOPIC: &str = "crash";
const GROUP: &str = "workers";

#[derive(Debug, Serialize, Deserialize)]
struct Job_ {
    n: u32,
}

/// What a worker process is told (through the environment, as JSON).
#[derive(Debug, Serialize, Deserialize)]
struct WorkerSpec {
    redis: String,
    prefix: String,
    log: PathBuf,
    consumer: String,
}

/// Jobs whose handler refuses them for good: they must end up dead-lettered.
fn is_fatal(n: u32) -> bool {
    n % 1000 == 999
}

#[test]
fn crash_recovery_with_killed_worker_processes_standalone() {
    crash_test(
        "crash_recovery_with_killed_worker_processes_standalone",
        "standalone",
        sluice_tests::standalone_url,
    );
}

#[test]
fn crash_recovery_with_killed_worker_processes_cluster() {
    crash_test(
        "crash_recovery_with_killed_worker_processes_cluster",
        "cluster",
        sluice_tests::cluster_spec,
    );
}

/// In a worker process (started by [`WorkerProc::spawn`] with `SLUICE_CRASH_WORKER` set): run
/// one worker. Otherwise: run the scenario on `spec()` (called only here, so a worker process
/// never starts servers of its own), re-running this test's binary as `test` for workers.
fn crash_test(test: &'static str, name: &str, spec: fn() -> String) {
    if let Ok(spec) = std::env::var(WORKER_ENV) {
        worker_process(serde_json::from_str(&spec).unwrap());
        return;
    }
    scenario(test, name, &spec());
}

/// One worker process: runs until SIGTERM, appending `<n>\n` (fixed width) to its log for each
/// job it completes, before the acknowledgement (so a kill between the two is a duplicate,
/// never a loss).
fn worker_process(spec: WorkerSpec) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let config = RedisConfig::parse(&spec.redis).unwrap();
        let d = Dispatcher::connect(config, Keyspace::new(&spec.prefix).unwrap())
            .await
            .unwrap();
        let topic = TopicConfig::new(TOPIC).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .unwrap();
        let log = std::sync::Arc::new(log);
        let config = WorkerConfig::new(GROUP)
            .unwrap()
            .set_consumer(spec.consumer.clone())
            .unwrap()
            .set_concurrency(8)
            .unwrap()
            .set_visibility_timeout(Duration::from_millis(1500))
            .unwrap()
            .set_max_deliveries(20)
            .unwrap()
            .set_poll_interval(Duration::from_millis(50))
            .unwrap()
            .set_shutdown_timeout(Duration::from_secs(5))
            .unwrap();
        let worker = d.worker(&topic, config, move |job: Job<Job_>| {
            let log = log.clone();
            async move {
                let n = job.payload().n;
                if is_fatal(n) {
                    return Err(JobError::fatal(format!("job {n} is refused")));
                }
                if n % 97 == 0 && job.attempt() == 1 {
                    return Err(JobError::retry_after(
                        "transient",
                        Duration::from_millis(20),
                    ));
                }
                // One write(2) of 9 bytes with O_APPEND: whole lines even under SIGKILL.
                (&*log).write_all(format!("{n:08}\n").as_bytes())?;
                // Work after the log line widens the window where a kill causes a duplicate.
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok(())
            }
        });
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
            term.recv().await;
            stop.cancel();
        });
        let report = worker.run(shutdown).await.unwrap();
        eprintln!("REPORT {}", serde_json::to_string(&report).unwrap());
    });
}

/// A worker process we started; killed on drop so a failing test leaves nothing behind.
struct WorkerProc {
    child: Option<Child>,
    name: String,
}

impl WorkerProc {
    fn spawn(test: &str, redis: &str, prefix: &str, dir: &Path, name: &str) -> Self {
        let spec = WorkerSpec {
            redis: redis.to_owned(),
            prefix: prefix.to_owned(),
            log: dir.join(format!("{name}.log")),
            consumer: name.to_owned(),
        };
        let stderr = std::fs::File::create(dir.join(format!("{name}.stderr"))).unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(WORKER_ENV, serde_json::to_string(&spec).unwrap())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Self {
            child: Some(child),
            name: name.to_owned(),
        }
    }

    /// SIGKILL, by our child's PID, and reap.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (graceful shutdown), then wait up to `limit` for the exit; SIGKILL after that.
    fn terminate(&mut self, limit: Duration) -> bool {
        let Some(child) = self.child.as_mut() else {
            return false;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
        false
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn completions(dir: &Path) -> Vec<u32> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).unwrap();
            all.extend(text.lines().map(|l| l.parse::<u32>().unwrap()));
        }
    }
    all
}

fn logged(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| e.metadata().map(|m| m.len() / 9).unwrap_or(0))
        .sum()
}

/// Jobs reclaimed from dead consumers, summed over the workers that shut down cleanly.
fn reclaimed(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "stderr") {
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines().filter_map(|l| l.strip_prefix("REPORT ")) {
                let report: serde_json::Value = serde_json::from_str(line).unwrap();
                total += report["reclaimed"].as_u64().unwrap();
            }
        }
    }
    total
}

fn scenario(test: &str, name: &str, spec: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let prefix = sluice_tests::unique_prefix("crash");
    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(&dir).unwrap();
    let d = rt.block_on(async {
        let config = RedisConfig::parse(spec).unwrap();
        Dispatcher::connect(config, Keyspace::new(&prefix).unwrap())
            .await
            .unwrap()
    });
    let topic = TopicConfig::new(TOPIC).unwrap();
    rt.block_on(async {
        let producer = d.producer::<Job_>(&topic);
        let jobs: Vec<Job_> = (0..JOBS).map(|n| Job_ { n }).collect();
        for chunk in jobs.chunks(1000) {
            producer.enqueue_batch(chunk).await.unwrap();
        }
        assert_eq!(d.stats(TOPIC).await.unwrap().stream_length, u64::from(JOBS));
    });

    let started = Instant::now();
    let mut workers: Vec<WorkerProc> = ["w1", "w2", "w3"]
        .iter()
        .map(|w| WorkerProc::spawn(test, spec, &prefix, &dir, w))
        .collect();
    // Kill a worker at ~20%, ~45% and ~70% of the completions; replace the first two.
    let kills = [
        (JOBS / 5, Some("w4")),
        (JOBS * 9 / 20, Some("w5")),
        (JOBS * 7 / 10, None),
    ];
    let mut killed_at = Vec::new();
    let deadline = started + Duration::from_secs(120);
    for (i, (threshold, replacement)) in kills.iter().enumerate() {
        while logged(&dir) < u64::from(*threshold) {
            assert!(
                Instant::now() < deadline,
                "{name}: no progress to {threshold}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let victim = &mut workers[i];
        let at = logged(&dir);
        victim.kill9();
        eprintln!("{name}: kill -9 {} at {at} completions", victim.name);
        killed_at.push(at);
        if let Some(replacement) = replacement {
            workers.push(WorkerProc::spawn(test, spec, &prefix, &dir, replacement));
        }
    }

    // Wait until every job is accounted for and nothing is pending, delayed or unread.
    let finished = rt.block_on(async {
        dispatcher_support::eventually(
            deadline.saturating_duration_since(Instant::now()),
            || async {
                let Ok(stats) = d.stats(TOPIC).await else {
                    return false;
                };
                let Some(g) = stats.groups.iter().find(|g| g.group == GROUP) else {
                    return false;
                };
                g.pending == 0
                    && g.lag == Some(0)
                    && g.delayed == 0
                    && logged(&dir) + stats.dead_letters >= u64::from(JOBS)
            },
        )
        .await
    });
    let elapsed = started.elapsed();
    let mut clean_exits = 0;
    for w in workers.iter_mut() {
        if w.child.is_some() && w.terminate(Duration::from_secs(15)) {
            clean_exits += 1;
        }
    }
    assert!(finished, "{name}: did not finish within the time limit");

    // The oracle.
    let done = completions(&dir);
    let distinct: HashSet<u32> = done.iter().copied().collect();
    let duplicates = done.len() - distinct.len();
    let dead = rt.block_on(async {
        let mut dead = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..1000 {
            let page = d.dead_letters(TOPIC, after.as_deref(), 500).await.unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            dead.extend(page);
        }
        dead
    });
    let dead_ns: HashSet<u32> = dead
        .iter()
        .map(|l| serde_json::from_slice::<Job_>(&l.payload).unwrap().n)
        .collect();
    let lost: Vec<u32> = (0..JOBS)
        .filter(|n| !distinct.contains(n) && !dead_ns.contains(n))
        .collect();
    let reclaimed = reclaimed(&dir);
    let poison = dead
        .iter()
        .filter(|l| l.reason == Some(DeadReason::Poison))
        .count();
    eprintln!(
        "{name}: {JOBS} jobs in {elapsed:?}; kill -9 at {killed_at:?} completions; \
         {} completions logged, {} distinct, {duplicates} duplicates; {} dead-lettered \
         ({poison} as poison); {} lost; {clean_exits} workers shut down cleanly, \
         {reclaimed} entries reclaimed from killed workers",
        done.len(),
        distinct.len(),
        dead.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "{name}: lost jobs {:?}",
        &lost[..lost.len().min(20)]
    );
    assert!(
        killed_at.iter().all(|&at| at < u64::from(JOBS)),
        "{name}: kills must happen mid-run: {killed_at:?}"
    );
    assert!(distinct.iter().all(|&n| n < JOBS));
    // Every refused job is dead-lettered (as refused, or as poison if it kept dying).
    for n in (0..JOBS).filter(|&n| is_fatal(n)) {
        assert!(dead_ns.contains(&n), "{name}: job {n} not dead-lettered");
        assert!(!distinct.contains(&n));
    }
    assert_eq!(
        clean_exits, 2,
        "{name}: the surviving workers exit 0 on SIGTERM"
    );
    // Three workers died holding jobs; the survivors took them over with XAUTOCLAIM.
    assert!(reclaimed > 0, "{name}: nothing was reclaimed");
    let _ = std::fs::remove_dir_all(&dir);
}
