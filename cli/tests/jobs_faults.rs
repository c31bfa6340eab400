//! `sluice jobs` and `sluice loadtest jobs` against what users type and what servers do
//! (issue 8): payloads stored verbatim, delays and dedup TTLs bounded, servers that may evict
//! refused, and a load test that rides out a frozen server and says honestly what a restarted
//! or flushed one lost. Each case was a reproduction first; fault cases use private servers.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    process::{Command, Output, Stdio},
    thread::sleep,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use sluice_shared::{Keyspace, RedisConfig, RedisHandle};
use support::{sluice, sluice_with_stdin, stderr, stdout};

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn connect(spec: &str) -> RedisHandle {
    RedisHandle::connect(&RedisConfig::parse(spec).unwrap())
        .await
        .unwrap()
}

/// The key `<prefix>:{topic}:<part>` the dispatcher uses.
fn topic_key(prefix: &str, topic: &str, part: &str) -> Vec<u8> {
    Keyspace::new(prefix.to_owned())
        .unwrap()
        .key(topic.as_bytes(), &[part])
}

/// The stored `payload` of every entry of the topic stream.
fn stored_payloads(spec: &str, prefix: &str, topic: &str) -> Vec<Vec<u8>> {
    sluice_tests::stream_field(spec, &topic_key(prefix, topic, "stream"), "payload")
}

sluice_tests::topology_test! {
    #[tokio::test]
    async fn enqueue_stores_the_payload_it_was_given(name, spec) {
        let prefix = sluice_tests::unique_prefix("verbatim");
        let base = ["jobs", "enqueue", "--redis", spec, "--prefix", &prefix, "--topic", "t"];
        let texts = [
            r#"{"z":1,"n":123456789012345678901234}"#,
            r#"{"a":-0,"a":1.50,"b":[1e400]}"#,
            r#"{"é":"\u00e9"}"#,
        ];
        for text in texts {
            let out = sluice(&[&base[..], &["--payload", text]].concat());
            assert_eq!(out.status.code(), Some(0), "{name}: {out:?}");
        }
        // From stdin too; the newline after the document is not part of it.
        let out = sluice_with_stdin(
            &[&base[..], &["--payload", "-"]].concat(),
            Some(&format!("{}\n", texts[0])),
        );
        assert_eq!(out.status.code(), Some(0), "{name}: {out:?}");
        let stored = stored_payloads(spec, &prefix, "t");
        let expected: Vec<&[u8]> = texts
            .iter()
            .chain(&texts[..1])
            .map(|t| t.as_bytes())
            .collect();
        assert_eq!(stored, expected, "{name}: payloads were rewritten");

        // Not JSON: exit 2 naming --payload, nothing enqueued.
        for bad in [r#"{"a":1,}"#, r#"{"a":"#, "nope", ""] {
            let out = sluice(&[&base[..], &["--payload", bad]].concat());
            assert_eq!(out.status.code(), Some(2), "{name} {bad:?}: {out:?}");
            let err = stderr(&out);
            assert!(err.contains("--payload is not valid JSON"), "{name}: {err}");
            assert!(!err.contains("panicked"), "{name}: {err}");
        }
        assert_eq!(stored_payloads(spec, &prefix, "t").len(), 4, "{name}");
    }

    #[tokio::test]
    async fn enqueue_bounds_delays_and_refuses_a_zero_dedup_ttl(name, spec) {
        let prefix = sluice_tests::unique_prefix("bounds");
        let base = ["jobs", "enqueue", "--redis", spec, "--prefix", &prefix, "--topic", "t"];
        let mut conn = connect(spec).await;
        let delayed = topic_key(&prefix, "t", "delayed");

        // Beyond the bound: refused, naming the flag and the bound; nothing stored.
        let out = sluice(&[&base[..], &["--payload", "{}", "--delay", "10000y"]].concat());
        assert_eq!(out.status.code(), Some(2), "{name}: {out:?}");
        let err = stderr(&out);
        assert!(err.contains("--delay: must be at most 365 days"), "{name}: {err}");
        let out = sluice(&[&base[..], &["--payload", "{}", "--dedup", "k", "--dedup-ttl", "0s"]].concat());
        assert_eq!(out.status.code(), Some(2), "{name}: {out:?}");
        let err = stderr(&out);
        assert!(err.contains("--dedup-ttl: must be at least 1ms"), "{name}: {err}");
        let count: u64 = redis::cmd("ZCARD").arg(&delayed).query_async(&mut conn).await.unwrap();
        assert_eq!(count, 0, "{name}");
        assert!(stored_payloads(spec, &prefix, "t").is_empty(), "{name}");

        // Within it: the due time printed is the one stored.
        let before = unix_ms_now();
        let out = sluice(&[&base[..], &["--payload", "{}", "--delay", "300d"]].concat());
        assert_eq!(out.status.code(), Some(0), "{name}: {out:?}");
        let printed: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(printed["status"], "delayed", "{name}: {printed}");
        let due = printed["due_ms"].as_u64().unwrap();
        let ahead = 300 * 86_400_000;
        assert!(
            due >= before + ahead && due <= unix_ms_now() + ahead + 5_000,
            "{name}: due_ms {due}"
        );
        let stored: Vec<(Vec<u8>, f64)> = redis::cmd("ZRANGE")
            .arg(&delayed)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(stored.len(), 1, "{name}");
        assert_eq!(stored[0].1 as u64, due, "{name}");
    }
}

#[tokio::test]
async fn a_server_that_may_evict_is_refused_by_writes_and_reported_by_stats() {
    let server = sluice_tests::RedisServer::start();
    let url = server.url();
    let mut admin = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory-policy", "allkeys-lru"])
        .query(&mut admin)
        .unwrap();
    let base = ["--redis", url.as_str(), "--prefix", "evict", "--topic", "t"];
    let enqueue = |extra: &[&str]| {
        sluice(&[&["jobs", "enqueue", "--payload", "{}"], &base[..], extra].concat())
    };

    let out = enqueue(&[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = stderr(&out);
    for needed in [
        "maxmemory-policy is allkeys-lru",
        "noeviction",
        "--allow-eviction",
    ] {
        assert!(err.contains(needed), "{needed:?} missing: {err}");
    }
    let out = sluice(&[&["jobs", "dlq", "replay", "--all"], &base[..]].concat());
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let length: u64 = redis::cmd("XLEN")
        .arg(topic_key("evict", "t", "stream"))
        .query(&mut admin)
        .unwrap();
    assert_eq!(length, 0, "a refused enqueue wrote a job");

    // Opted in: it runs, and says what it risks.
    let out = enqueue(&["--allow-eviction"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stderr(&out).contains("allkeys-lru"), "{out:?}");

    // Stats never refuse; they report.
    let out = sluice(&[&["jobs", "stats"], &base[..]].concat());
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stats: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(stats["stream_length"], 1, "{stats}");
    assert_eq!(stats["eviction"]["status"], "possible", "{stats}");
    assert_eq!(stats["eviction"]["policy"], "allkeys-lru", "{stats}");
    assert_eq!(stats["eviction"]["safe_policy"], "noeviction", "{stats}");
    assert!(
        stderr(&out).contains("maxmemory-policy is allkeys-lru"),
        "{out:?}"
    );
}

// ---- sluice loadtest jobs under faults (issue 8, item 5) -------------------------------------

/// `--timeout` of every faulted run; each must end well before it.
const RUN_TIMEOUT_S: u64 = 60;

/// `kill -STOP` on a server, undone on drop: a failing test never leaves it frozen.
struct Frozen(u32);

impl Frozen {
    fn new(pid: u32) -> Self {
        signal("-STOP", pid);
        Self(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal("-CONT", self.0);
    }
}

fn signal(sig: &str, pid: u32) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

/// A load test run in the background: a few thousand jobs that take a few seconds to process
/// (5 ms each, 5 at a time), so a fault can land in the middle.
struct Run {
    child: std::process::Child,
    started: Instant,
}

impl Run {
    fn start(url: &str, prefix: &str) -> Self {
        let timeout = format!("{RUN_TIMEOUT_S}s");
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args([
                "loadtest",
                "jobs",
                "--redis",
                url,
                "--prefix",
                prefix,
                "--jobs",
                "3000",
                "--batch",
                "100",
                "--concurrency",
                "5",
                "--handler",
                "sleep:5ms",
                "--idle-probes",
                "10",
                "--timeout",
                &timeout,
                "--json",
                "--quiet",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Self {
            child,
            started: Instant::now(),
        }
    }

    /// Wait for the end, bounded: past --timeout plus the grace the tool allows itself, the
    /// run is killed and the test fails (a hang).
    fn finish(mut self) -> (Output, Duration) {
        let limit = Duration::from_secs(RUN_TIMEOUT_S + 40);
        while self.child.try_wait().unwrap().is_none() {
            if self.started.elapsed() > limit {
                let _ = self.child.kill();
                let out = self.child.wait_with_output().unwrap();
                panic!("the load test hung past --timeout: {out:?}");
            }
            sleep(Duration::from_millis(50));
        }
        let elapsed = self.started.elapsed();
        (self.child.wait_with_output().unwrap(), elapsed)
    }
}

/// Block until the run's workers have read `n` jobs (processing is under way), or panic.
fn wait_until_processing(url: &str, prefix: &str, n: u64) {
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let streams: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*:stream"))
            .query(&mut c)
            .unwrap();
        for stream in &streams {
            let groups: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(stream)
                .query(&mut c)
                .unwrap_or_default();
            let read = groups
                .iter()
                .filter_map(|g| match g.get("entries-read") {
                    Some(redis::Value::Int(n)) => Some(*n as u64),
                    _ => None,
                })
                .max()
                .unwrap_or(0);
            if read >= n {
                return;
            }
        }
        assert!(Instant::now() < deadline, "processing never started");
        sleep(Duration::from_millis(10));
    }
}

/// Keys left under `prefix` on the server at `url`.
fn keys_left(url: &str, prefix: &str) -> Vec<String> {
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(&mut c)
        .unwrap()
}

fn report(out: &Output) -> serde_json::Value {
    let text = stdout(out);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("no report ({e}): {out:?}"))
}

#[test]
fn loadtest_jobs_rides_out_a_frozen_server() {
    let server = sluice_tests::RedisServer::start();
    let url = server.url();
    let prefix = "ltfreeze";
    let run = Run::start(&url, prefix);
    wait_until_processing(&url, prefix, 300);
    {
        let _frozen = Frozen::new(server.pid().unwrap());
        sleep(Duration::from_secs(3));
    }
    let (out, elapsed) = run.finish();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let r = report(&out);
    assert_eq!(r["enqueued"], 3000, "{r}");
    assert_eq!(r["processed"], 3000, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["timed_out"], false, "{r}");
    assert_eq!(r["redis_lost_keys"], false, "{r}");
    assert!(elapsed < Duration::from_secs(RUN_TIMEOUT_S), "{elapsed:?}");
    assert_eq!(keys_left(&url, prefix), Vec::<String>::new());
}

#[test]
fn loadtest_jobs_says_what_a_restarted_server_lost() {
    let mut server = sluice_tests::RedisServer::start();
    let url = server.url();
    let prefix = "ltrestart";
    let run = Run::start(&url, prefix);
    wait_until_processing(&url, prefix, 300);
    // No persistence: every queued job is gone with the process.
    server.restart();
    let (out, elapsed) = run.finish();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(!err.contains("panicked"), "{err}");
    let r = report(&out);
    let lost = r["lost"].as_u64().unwrap();
    assert!(
        lost > 0,
        "jobs queued in the killed server must count as lost: {r}"
    );
    assert_eq!(r["redis_restarted"], true, "{r}");
    assert_eq!(r["redis_lost_keys"], true, "{r}");
    assert!(r["redis_cpu_us_per_job"].is_null(), "counters reset: {r}");
    assert!(
        err.contains(&format!("{lost} jobs lost")) && err.contains("restarted"),
        "{err}"
    );
    assert!(!err.contains("raise --timeout"), "{err}");
    assert!(
        elapsed < Duration::from_secs(RUN_TIMEOUT_S),
        "waited for jobs that no longer existed: {elapsed:?}"
    );
    assert_eq!(keys_left(&url, prefix), Vec::<String>::new());
}

#[test]
fn loadtest_jobs_says_what_a_flush_lost() {
    let server = sluice_tests::RedisServer::start();
    let url = server.url();
    let prefix = "ltflush";
    let run = Run::start(&url, prefix);
    wait_until_processing(&url, prefix, 300);
    let mut c = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    let (out, elapsed) = run.finish();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let r = report(&out);
    let lost = r["lost"].as_u64().unwrap();
    assert!(lost > 0, "{r}");
    assert_eq!(r["redis_restarted"], false, "{r}");
    assert_eq!(r["redis_lost_keys"], true, "{r}");
    assert!(
        err.contains(&format!("{lost} jobs lost")) && err.contains("FLUSHALL"),
        "{err}"
    );
    assert!(!err.contains("raise --timeout"), "{err}");
    assert!(elapsed < Duration::from_secs(RUN_TIMEOUT_S), "{elapsed:?}");
    assert_eq!(keys_left(&url, prefix), Vec::<String>::new());
}
