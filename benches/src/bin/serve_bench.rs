//! `sluice serve` (gRPC `ShouldRateLimit`) against direct library calls (`Limiter::check_all`
//! of the same rules and keys) on one private Redis: 50 concurrent callers, closed loop, cases
//! run A B A B (the order flips every round) for several rounds; per case the medians over
//! the rounds and the median of the per-round ratios. The machine has 2 shared cores, so the
//! client, the service and Redis compete for them: the ratios matter more than the numbers.
//!
//! Run it with `scripts/bench-serve` (builds both binaries in release mode). By hand:
//!
//! ```sh
//! serve-bench --sluice target/release/sluice [--rounds 5] [--seconds 5] [--concurrency 50]
//!             [--out docs/BENCHMARKS.md]
//! ```
//!
//! The Redis server is a private one on a free 127.0.0.1 port (started here, killed by its PID
//! on exit), and so is `sluice serve` (killed by its PID on exit). Every run is bounded in
//! time (`--seconds`) and in calls (`MAX_CALLS`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    rc::Rc,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use sluice_gateway::{
    Config, RequestDescriptor,
    envoy_types::pb::envoy::{
        extensions::common::ratelimit::v3::{RateLimitDescriptor, rate_limit_descriptor},
        service::ratelimit::v3::{
            RateLimitRequest, rate_limit_response::Code,
            rate_limit_service_client::RateLimitServiceClient,
        },
    },
};
use sluice_limiter::{Check, Limiter, Rule};
use sluice_shared::{RedisConfig, RedisHandle};
use sluice_tests::RedisServer;

/// At most this many calls in one run, whatever `--seconds` says.
const MAX_CALLS: u64 = 5_000_000;
/// Distinct `remote_address` values in the many-keys cases.
const ADDRESSES: usize = 10_000;
/// Distinct `route` values in the two-descriptor case.
const ROUTES: usize = 16;
const DOMAIN: &str = "bench";
/// The library's limiter and the service count under different prefixes, so neither sees
/// the other's counters.
const LIB_PREFIX: &str = "bench-lib";
const SVC_PREFIX: &str = "bench-svc";
/// The Redis timeout of both sides: far above the service's default (`serve.timeout`, 50 ms),
/// so a stall of the shared machine is measured as latency, not answered by an outage policy.
const TIMEOUT: Duration = Duration::from_secs(1);

/// Envoy's defaults: fixed windows aligned to the unit (the service's default algorithm).
const CONFIG: &str = r#"
domain: bench
descriptors:
  - key: remote_address
    rate_limit: {unit: hour, requests_per_unit: 1000000000}
  - key: hot
    rate_limit: {unit: hour, requests_per_unit: 100}
  - key: route
    rate_limit: {unit: hour, requests_per_unit: 1000000000}
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    ManyKeys,
    HotKey,
    TwoDescriptors,
}

impl Case {
    const ALL: [Case; 3] = [Case::ManyKeys, Case::HotKey, Case::TwoDescriptors];

    fn title(self) -> &'static str {
        match self {
            Case::ManyKeys => "one descriptor, 10k keys, mostly allowed",
            Case::HotKey => "one descriptor, one hot key, mostly denied",
            Case::TwoDescriptors => "two descriptors (10k keys + 16 routes), mostly allowed",
        }
    }

    /// Request `i`'s descriptors, as (key, value) entries.
    fn descriptors(self, i: u64) -> Vec<Vec<(String, String)>> {
        let address = |i: u64| {
            let n = (i.wrapping_mul(7919) % ADDRESSES as u64) as u32;
            format!("10.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255)
        };
        match self {
            Case::ManyKeys => vec![vec![("remote_address".into(), address(i))]],
            Case::HotKey => vec![vec![("hot".into(), "all".into())]],
            Case::TwoDescriptors => vec![
                vec![("remote_address".into(), address(i))],
                vec![("route".into(), format!("/api/v1/r{}", i % ROUTES as u64))],
            ],
        }
    }

    /// How many distinct requests the case cycles through.
    fn distinct(self) -> usize {
        match self {
            Case::ManyKeys | Case::TwoDescriptors => ADDRESSES,
            Case::HotKey => 1,
        }
    }
}

/// One request, prepared both ways: the gRPC request, and the limiter's rules and keys.
struct Prepared {
    grpc: RateLimitRequest,
    checks: Vec<(Rule, Vec<u8>)>,
}

/// The rule the service uses for a rate (its `rule_for`): the configured algorithm (envoy's
/// fixed window by default); a rate without a rule (one that denies all) gets a one-bucket
/// sliding counter, which the cases here never use.
fn rule_for(rate: &sluice_gateway::Rate) -> Rule {
    rate.rule().cloned().unwrap_or_else(|| {
        Rule::sliding_counter(
            format!("{}.fixed", rate.rule_name()),
            u64::from(rate.requests_per_unit()),
            rate.window(),
            rate.window(),
        )
        .unwrap()
    })
}

fn prepare(config: &Config, case: Case) -> Vec<Prepared> {
    (0..case.distinct() as u64)
        .map(|i| {
            let entries = case.descriptors(i);
            let descriptors: Vec<RequestDescriptor<'_, (String, String)>> =
                entries.iter().map(|e| RequestDescriptor::new(e)).collect();
            let plan = config.plan(DOMAIN, &descriptors, 1);
            let checks = plan
                .checks()
                .map(|(_, d, applied)| {
                    let key = d
                        .key_id()
                        .expect("a matched descriptor")
                        .as_bytes()
                        .to_vec();
                    (rule_for(applied.rate()), key)
                })
                .collect::<Vec<_>>();
            assert_eq!(
                checks.len(),
                entries.len(),
                "every descriptor has one limit"
            );
            let grpc = RateLimitRequest {
                domain: DOMAIN.to_owned(),
                descriptors: entries
                    .iter()
                    .map(|e| RateLimitDescriptor {
                        entries: e
                            .iter()
                            .map(|(k, v)| rate_limit_descriptor::Entry {
                                key: k.clone(),
                                value: v.clone(),
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                hits_addend: 0,
            };
            Prepared { grpc, checks }
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Library,
    Service,
}

/// One timed run.
#[derive(Debug, Clone)]
struct Run {
    calls: u64,
    allowed: u64,
    errors: u64,
    /// Answers given by an outage policy (the service's fail-open, the library's errors).
    fallbacks: u64,
    per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    redis_cpu_us: f64,
    service_cpu_us: Option<f64>,
    client_cpu_us: f64,
}

struct Bench {
    limiter: Limiter,
    client: RateLimitServiceClient<tonic::transport::Channel>,
    service_pid: u32,
    service_http: String,
    info: redis::aio::MultiplexedConnection,
}

async fn redis_cpu_us(conn: &mut redis::aio::MultiplexedConnection) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(conn)
        .await
        .unwrap();
    let field = |name: &str| -> f64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    (field("used_cpu_sys") + field("used_cpu_user")) * 1e6
}

/// utime + stime of a process, in µs (Linux `/proc/PID/stat`).
fn process_cpu_us(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks * 1e6 / 100.0) // USER_HZ is 100 on Linux
}

/// `sluice_gateway_outage_answers_total`, summed, from the service's `/metrics`.
async fn outage_answers(http: &str) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(http).await else {
        return 0;
    };
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
    if stream.write_all(req.as_bytes()).await.is_err() {
        return 0;
    }
    let mut body = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut body)).await;
    body.lines()
        .filter(|l| l.starts_with("sluice_gateway_outage_answers_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

impl Bench {
    async fn run(
        &mut self,
        side: Side,
        prepared: Rc<Vec<Prepared>>,
        concurrency: usize,
        duration: Duration,
    ) -> Run {
        let next = Rc::new(AtomicU64::new(0));
        let start = Instant::now();
        let deadline = start + duration;
        let redis_before = redis_cpu_us(&mut self.info).await;
        let svc_before = process_cpu_us(self.service_pid);
        let client_before = process_cpu_us(std::process::id()).unwrap_or(0.0);
        let outage_before = outage_answers(&self.service_http).await;
        let local = tokio::task::LocalSet::new();
        let mut tasks = Vec::with_capacity(concurrency);
        for _ in 0..concurrency {
            let (next, prepared) = (Rc::clone(&next), Rc::clone(&prepared));
            let limiter = self.limiter.clone();
            let mut client = self.client.clone();
            tasks.push(local.spawn_local(async move {
                let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
                let (mut allowed, mut errors, mut fallbacks) = (0u64, 0u64, 0u64);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= MAX_CALLS || Instant::now() >= deadline {
                        break;
                    }
                    let p = &prepared[i as usize % prepared.len()];
                    let t = Instant::now();
                    match side {
                        Side::Library => {
                            let checks: Vec<Check<'_>> = p
                                .checks
                                .iter()
                                .map(|(rule, key)| Check::new(rule, key))
                                .collect();
                            match limiter.check_all(&checks).await {
                                Ok(multi) => {
                                    allowed += u64::from(multi.allowed);
                                    if multi.source != sluice_limiter::Source::Redis {
                                        fallbacks += 1;
                                    }
                                }
                                Err(_) => errors += 1,
                            }
                        }
                        Side::Service => match client.should_rate_limit(p.grpc.clone()).await {
                            Ok(r) => {
                                allowed +=
                                    u64::from(r.into_inner().overall_code == Code::Ok as i32);
                            }
                            Err(_) => errors += 1,
                        },
                    }
                    let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                    hist.saturating_record(us.max(1));
                }
                (hist, allowed, errors, fallbacks)
            }));
        }
        let (mut hist, mut allowed, mut errors, mut fallbacks) = (
            Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
            0,
            0,
            0,
        );
        local
            .run_until(async {
                for task in tasks {
                    let (h, a, e, f) = task.await.unwrap();
                    hist.add(h).unwrap();
                    allowed += a;
                    errors += e;
                    fallbacks += f;
                }
            })
            .await;
        let elapsed = start.elapsed().as_secs_f64();
        let client_cpu = process_cpu_us(std::process::id()).unwrap_or(0.0) - client_before;
        let redis_cpu = redis_cpu_us(&mut self.info).await - redis_before;
        let svc_cpu = match (svc_before, process_cpu_us(self.service_pid)) {
            (Some(a), Some(b)) if side == Side::Service => Some(b - a),
            _ => None,
        };
        if side == Side::Service {
            fallbacks += outage_answers(&self.service_http)
                .await
                .saturating_sub(outage_before);
        }
        let calls = hist.len();
        Run {
            calls,
            allowed,
            errors,
            fallbacks,
            per_sec: calls as f64 / elapsed,
            p50_us: hist.value_at_quantile(0.5) as f64,
            p99_us: hist.value_at_quantile(0.99) as f64,
            redis_cpu_us: redis_cpu / calls.max(1) as f64,
            service_cpu_us: svc_cpu.map(|c| c / calls.max(1) as f64),
            client_cpu_us: client_cpu / calls.max(1) as f64,
        }
    }
}

/// What one caller's round trip costs with no limiter work: the floor under the one-caller
/// latencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Floor {
    /// `PING` to Redis from this process: the library's floor (one loopback round trip).
    Ping,
    /// `ShouldRateLimit` for a domain the config does not have: `sluice serve` answers OK
    /// without asking Redis, so this is the hop to the service and back, and its request
    /// handling.
    Hop,
}

impl Bench {
    /// One caller, closed loop, for `duration`: p50 and p99 in µs.
    async fn floor(&mut self, floor: Floor, duration: Duration) -> (f64, f64) {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        let deadline = Instant::now() + duration;
        let unknown = RateLimitRequest {
            domain: "no-such-domain".to_owned(),
            descriptors: vec![RateLimitDescriptor {
                entries: vec![rate_limit_descriptor::Entry {
                    key: "remote_address".to_owned(),
                    value: "10.0.0.1".to_owned(),
                }],
                ..Default::default()
            }],
            hits_addend: 0,
        };
        for _ in 0..MAX_CALLS {
            if Instant::now() >= deadline {
                break;
            }
            let t = Instant::now();
            match floor {
                Floor::Ping => {
                    let _: String = redis::cmd("PING")
                        .query_async(&mut self.info)
                        .await
                        .unwrap();
                }
                Floor::Hop => {
                    self.client
                        .should_rate_limit(unknown.clone())
                        .await
                        .unwrap();
                }
            }
            let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
            hist.saturating_record(us.max(1));
        }
        (
            hist.value_at_quantile(0.5) as f64,
            hist.value_at_quantile(0.99) as f64,
        )
    }
}

/// The service process, killed by its PID on drop.
struct Service(Child);

/// Kills the given PIDs (processes started here) if this process dies without dropping it,
/// e.g. on `timeout`'s SIGTERM; dropped first on a normal exit, so it never outlives them.
struct Watcher(Option<Child>);

impl Watcher {
    fn new(pids: &[u32]) -> Self {
        let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "while kill -0 {parent} 2>/dev/null; do sleep 0.5; done; kill -9 {pids} 2>/dev/null",
                parent = std::process::id(),
                pids = pids.join(" ")
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        Self(child)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_service(
    sluice: &PathBuf,
    redis_url: &str,
    config: &std::path::Path,
) -> (Service, String, String) {
    let mut child = Command::new(sluice)
        .args([
            "serve", "--redis", redis_url, "--prefix", SVC_PREFIX, "--config",
        ])
        .arg(config)
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .env(
            "SLUICE_SERVE__TIMEOUT",
            format!("{}ms", TIMEOUT.as_millis()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", sluice.display()));
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let service = Service(child);
    // "sluice serve: grpc 127.0.0.1:P, http 127.0.0.1:Q, config ..., redis ..."
    let addr = |label: &str| {
        first
            .split(", ")
            .find_map(|part| {
                part.trim_start_matches("sluice serve: ")
                    .strip_prefix(label)
            })
            .unwrap_or_else(|| panic!("unexpected first line from sluice serve: {first:?}"))
            .trim()
            .to_owned()
    };
    let (grpc, http) = (addr("grpc "), addr("http "));
    (service, grpc, http)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn range(v: &[f64]) -> (f64, f64) {
    (
        v.iter().copied().fold(f64::INFINITY, f64::min),
        v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    )
}

fn thousands(x: f64) -> String {
    let n = x.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn with_range(v: &[f64], fmt: impl Fn(f64) -> String) -> String {
    let (lo, hi) = range(v);
    format!("{} ({}–{})", fmt(median(v.to_vec())), fmt(lo), fmt(hi))
}

struct Args {
    sluice: PathBuf,
    rounds: usize,
    seconds: f64,
    concurrency: usize,
    out: Option<PathBuf>,
    command: String,
}

fn args() -> Args {
    let mut a = Args {
        sluice: PathBuf::from("target/release/sluice"),
        rounds: 5,
        seconds: 5.0,
        concurrency: 50,
        out: None,
        command: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--sluice" => a.sluice = PathBuf::from(value()),
            "--rounds" => a.rounds = value().parse().expect("--rounds N"),
            "--seconds" => a.seconds = value().parse().expect("--seconds S"),
            "--concurrency" => a.concurrency = value().parse().expect("--concurrency N"),
            "--out" => a.out = Some(PathBuf::from(value())).filter(|p| p.as_os_str() != "-"),
            "--command" => a.command = value(),
            other => panic!(
                "unknown flag {other} (--sluice PATH, --rounds N, --seconds S, --concurrency N, --out FILE|-, --command TEXT)"
            ),
        }
    }
    assert!((1..=50).contains(&a.rounds), "--rounds 1 to 50");
    assert!(a.seconds > 0.0 && a.seconds <= 60.0, "--seconds up to 60");
    assert!(
        (1..=1000).contains(&a.concurrency),
        "--concurrency 1 to 1000"
    );
    a
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench(args));
}

async fn bench(args: Args) {
    let redis = RedisServer::start();
    let redis_url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("bench.yaml");
    std::fs::write(&config_path, CONFIG).unwrap();
    let config = Config::load(&config_path).unwrap();
    let (service, grpc, http) = start_service(&args.sluice, &redis_url, &config_path);
    let watcher = Watcher::new(&[service.0.id(), redis.pid().unwrap()]);

    let handle = RedisHandle::connect(&RedisConfig::parse(&redis_url).unwrap())
        .await
        .unwrap();
    let limiter = Limiter::builder(handle)
        .prefix(LIB_PREFIX)
        .unwrap()
        .timeout(TIMEOUT)
        .unwrap()
        .build();
    let mut client = None;
    for _ in 0..100 {
        match RateLimitServiceClient::connect(format!("http://{grpc}")).await {
            Ok(c) => {
                client = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let info = redis::Client::open(redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut bench = Bench {
        limiter,
        client: client.expect("sluice serve's gRPC answers"),
        service_pid: service.0.id(),
        service_http: http,
        info,
    };
    let prepared: Vec<(Case, Rc<Vec<Prepared>>)> = Case::ALL
        .iter()
        .map(|&c| (c, Rc::new(prepare(&config, c))))
        .collect();
    let duration = Duration::from_secs_f64(args.seconds);

    eprintln!("serve-bench: warming up (1 s per side and case)");
    for (_, p) in &prepared {
        for side in [Side::Library, Side::Service] {
            bench
                .run(side, Rc::clone(p), args.concurrency, Duration::from_secs(1))
                .await;
        }
    }

    // results[case][side] = one Run per round (sides 2 and 3: the same with one caller)
    let mut results: Vec<[Vec<Run>; 4]> = vec![Default::default(); Case::ALL.len()];
    let one_caller = duration / 2;
    let mut floors: Vec<[(f64, f64); 2]> = Vec::new();
    for round in 0..args.rounds {
        let ping = bench.floor(Floor::Ping, one_caller).await;
        let hop = bench.floor(Floor::Hop, one_caller).await;
        eprintln!(
            "serve-bench: round {}/{} floors, one caller: PING p50 {} µs, gRPC without Redis p50 {} µs",
            round + 1,
            args.rounds,
            ping.0,
            hop.0
        );
        floors.push([ping, hop]);
        let order = if round % 2 == 0 {
            [Side::Library, Side::Service]
        } else {
            [Side::Service, Side::Library]
        };
        for (c, (case, p)) in prepared.iter().enumerate() {
            // 50 callers, then one (the hop's latency without queueing): slots 0-1, 2-3.
            for (callers, time, slot) in [(args.concurrency, duration, 0), (1, one_caller, 2)] {
                for side in order {
                    let run = bench.run(side, Rc::clone(p), callers, time).await;
                    eprintln!(
                        "serve-bench: round {}/{} {case:?} {side:?}, {callers} caller(s): {:.0}/s p50 {} µs p99 {} µs allowed {}/{} errors {} fallbacks {}",
                        round + 1,
                        args.rounds,
                        run.per_sec,
                        run.p50_us,
                        run.p99_us,
                        run.allowed,
                        run.calls,
                        run.errors,
                        run.fallbacks
                    );
                    results[c][slot + side as usize].push(run);
                }
            }
        }
    }

    let text = report(&args, &results, &floors);
    println!("{text}");
    if let Some(out) = &args.out {
        write_section(out, &text);
        eprintln!("serve-bench: wrote {}", out.display());
    }
    drop(watcher);
    drop(service);
    drop(redis);
}

const SECTION: &str = "## sluice serve vs the library";
/// Reading notes, appended to the section (the numbers above them are rewritten each run).
const NOTES: &str = include_str!("../../serve_bench_notes.md");

fn report(args: &Args, results: &[[Vec<Run>; 4]], floors: &[[(f64, f64); 2]]) -> String {
    let mut l = vec![
        SECTION.to_owned(),
        String::new(),
        format!(
            "Written by `scripts/bench-serve` (rerun it; do not edit by hand). {} rounds of {} s per \
             side and case, {} concurrent callers in a closed loop, A B A B (the order flips every \
             round) on one private Redis; medians over the rounds, min–max in brackets; ratios and \
             differences are taken within a round, and their median is shown.",
            args.rounds, args.seconds, args.concurrency
        ),
        String::new(),
        "- **service**: `sluice serve` (release build, its own process, default settings but a 1 s \
         Redis timeout, fail-open) answering `ShouldRateLimit` over one HTTP/2 connection \
         (tonic, the `envoy-types` protos), as Envoy's filter calls it."
            .to_owned(),
        "- **library**: `Limiter::check_all` of the same rules and keys, in the benchmark \
         process (single-threaded tokio runtime), 1 s timeout."
            .to_owned(),
        "- Config: envoy's defaults (fixed windows: the limiter's fixed-window algorithm); \
         `remote_address` and `route` at 10⁹ per hour (never refused), `hot` at 100 per hour \
         (refused after the first 100)."
            .to_owned(),
        "- The client, `sluice serve` and Redis share the machine's 2 cores. Redis CPU: \
         `used_cpu_sys + used_cpu_user` (INFO cpu) over the run / decisions; service CPU: the \
         `sluice serve` process' utime + stime over the run / decisions; client CPU: the benchmark \
         process' (the library and its callers, or the tonic client and its callers)."
            .to_owned(),
        String::new(),
        "| case | side | decisions/s | p50 µs | p99 µs | Redis CPU µs/decision | service CPU µs/decision | client CPU µs/decision | allowed |".to_owned(),
        "|---|---|---|---|---|---|---|---|---|".to_owned(),
    ];
    let mut targets = Vec::new();
    let mut one = vec![
        String::new(),
        format!(
            "One caller (closed loop, {} s per side and case and round): the hop's own latency, \
             without queueing.",
            args.seconds / 2.0
        ),
        String::new(),
        "| case | library p50 µs | library p99 µs | service p50 µs | service p99 µs | p50 added µs |"
            .to_owned(),
        "|---|---|---|---|---|---|".to_owned(),
    ];
    for (c, case) in Case::ALL.iter().enumerate() {
        for side in [Side::Library, Side::Service] {
            let runs = &results[c][side as usize];
            let col = |f: fn(&Run) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
            let allowed: u64 = runs.iter().map(|r| r.allowed).sum();
            let calls: u64 = runs.iter().map(|r| r.calls).sum();
            let svc = if side == Side::Service {
                with_range(&col(|r| r.service_cpu_us.unwrap_or(f64::NAN)), |x| {
                    format!("{x:.1}")
                })
            } else {
                "n/a".to_owned()
            };
            l.push(format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1}% |",
                case.title(),
                if side == Side::Library {
                    "library"
                } else {
                    "service"
                },
                with_range(&col(|r| r.per_sec), thousands),
                with_range(&col(|r| r.p50_us), thousands),
                with_range(&col(|r| r.p99_us), thousands),
                with_range(&col(|r| r.redis_cpu_us), |x| format!("{x:.1}")),
                svc,
                with_range(&col(|r| r.client_cpu_us), |x| format!("{x:.1}")),
                100.0 * allowed as f64 / calls.max(1) as f64,
            ));
        }
        let [lib, svc, lib1, svc1] = &results[c];
        let ratios: Vec<f64> = lib
            .iter()
            .zip(svc)
            .map(|(l, s)| s.per_sec / l.per_sec)
            .collect();
        let added: Vec<f64> = lib
            .iter()
            .zip(svc)
            .map(|(l, s)| s.p50_us - l.p50_us)
            .collect();
        let faults: u64 = lib.iter().chain(svc).map(|r| r.errors + r.fallbacks).sum();
        let added1: Vec<f64> = lib1
            .iter()
            .zip(svc1)
            .map(|(l, s)| s.p50_us - l.p50_us)
            .collect();
        let p50 = |runs: &[Run]| runs.iter().map(|r| r.p50_us).collect::<Vec<f64>>();
        let p99 = |runs: &[Run]| runs.iter().map(|r| r.p99_us).collect::<Vec<f64>>();
        one.push(format!(
            "| {} | {} | {} | {} | {} | {} |",
            case.title(),
            with_range(&p50(lib1), thousands),
            with_range(&p99(lib1), thousands),
            with_range(&p50(svc1), thousands),
            with_range(&p99(svc1), thousands),
            with_range(&added1, thousands),
        ));
        // The serving side's CPU per decision: Redis + the library's caller, or Redis +
        // `sluice serve` (the caller, Envoy, runs elsewhere in production).
        let capacity: Vec<f64> = lib
            .iter()
            .zip(svc)
            .map(|(l, s)| {
                (l.redis_cpu_us + l.client_cpu_us)
                    / (s.redis_cpu_us + s.service_cpu_us.unwrap_or(f64::NAN))
            })
            .collect();
        targets.push((case, ratios, capacity, added, added1, faults));
    }
    l.extend(one);
    let floor = |i: usize, q: fn(&(f64, f64)) -> f64| -> Vec<f64> {
        floors.iter().map(|f| q(&f[i])).collect()
    };
    l.extend([
        String::new(),
        "The floor under those, one caller, measured each round: a Redis `PING` from the \
         benchmark process (one loopback round trip, the least a library call can take), and \
         `ShouldRateLimit` for a domain the config lacks (`sluice serve` answers without asking \
         Redis: the gRPC hop and its request handling, the least the service can add)."
            .to_owned(),
        String::new(),
        "| floor | p50 µs | p99 µs |".to_owned(),
        "|---|---|---|".to_owned(),
        format!(
            "| Redis `PING`, one round trip | {} | {} |",
            with_range(&floor(0, |f| f.0), thousands),
            with_range(&floor(0, |f| f.1), thousands)
        ),
        format!(
            "| gRPC to `sluice serve`, no Redis call | {} | {} |",
            with_range(&floor(1, |f| f.0), thousands),
            with_range(&floor(1, |f| f.1), thousands)
        ),
    ]);
    l.push(String::new());
    l.push("Targets (issue 9): the service keeps at least half the library's decisions/s, and adds under 100 µs at p50. \
            \"Per serving CPU-second\" divides the library side's Redis + caller CPU per decision by the service side's \
            Redis + `sluice serve` CPU per decision: what each costs to serve when the caller (Envoy) runs on other cores.".to_owned());
    l.push(String::new());
    l.push("| case | service / library decisions/s | ≥ 0.5? | service / library decisions per serving CPU-second | p50 added µs, 50 callers | < 100 µs? | p50 added µs, one caller | < 100 µs? | errors + outage answers |".to_owned());
    l.push("|---|---|---|---|---|---|---|---|---|".to_owned());
    let met = |ok: bool| if ok { "met" } else { "**not met**" };
    for (case, ratios, capacity, added, added1, faults) in &targets {
        l.push(format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            case.title(),
            with_range(ratios, |x| format!("{x:.2}")),
            met(median(ratios.clone()) >= 0.5),
            with_range(capacity, |x| format!("{x:.2}")),
            with_range(added, thousands),
            met(median(added.clone()) < 100.0),
            with_range(added1, thousands),
            met(median(added1.clone()) < 100.0),
            faults
        ));
    }
    l.push(String::new());
    l.push("```sh".to_owned());
    l.push(if args.command.is_empty() {
        format!(
            "serve-bench --sluice {} --rounds {} --seconds {} --concurrency {}",
            args.sluice.display(),
            args.rounds,
            args.seconds,
            args.concurrency
        )
    } else {
        args.command.clone()
    });
    l.push("```".to_owned());
    l.push(String::new());
    l.push(NOTES.trim_end().to_owned());
    l.join("\n")
}

/// Replace the section in `out` (from its heading to the next `## ` heading or the end), or
/// append it.
fn write_section(out: &std::path::Path, section: &str) {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let new = match text.find(SECTION) {
        Some(start) => {
            let after = &text[start + SECTION.len()..];
            let end = after
                .find("\n## ")
                .map_or(text.len(), |i| start + SECTION.len() + i + 1);
            format!(
                "{}{section}\n{}{}",
                &text[..start],
                if end < text.len() { "\n" } else { "" },
                &text[end..]
            )
        }
        None => format!("{}\n\n{section}\n", text.trim_end()),
    };
    std::fs::write(out, new).unwrap();
}
