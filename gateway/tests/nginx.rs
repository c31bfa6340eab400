//! A real nginx (Debian's `nginx`, with `ngx_http_auth_request_module`; `scripts/setup`
//! installs it) in front of a test app, asking `sluice serve`'s HTTP check before every
//! request, as `docs/GATEWAY.md`'s recipe does: the config is `tests/nginx/nginx.conf.template`
//! with its placeholders filled. The service and the app run in-process on 127.0.0.1:0, nginx
//! on a free loopback port with every file in a temp dir; a real HTTP client (reqwest) drives
//! it until the limit. nginx is stopped by its PID when the test ends, failed or not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use support::*;

/// The recipe: `docs/GATEWAY.md` shows this file as it is.
const TEMPLATE: &str = include_str!("nginx/nginx.conf.template");

/// Sluice's config for the recipe's domain: 3 requests a day per client address.
const WEB: &str = r#"
domain: web
descriptors:
  - key: remote_address
    rate_limit: {unit: day, requests_per_unit: 3}
"#;

const POLICY: &str = r#""web.remote_address";q=3;w=86400"#;

fn nginx_binary() -> PathBuf {
    std::env::var_os("SLUICE_NGINX").map_or_else(|| PathBuf::from("/usr/sbin/nginx"), PathBuf::from)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An nginx process this test started: stopped (by its PID) on drop.
struct Nginx {
    addr: SocketAddr,
    child: Child,
    /// Kills nginx if the test process dies without dropping this.
    watcher: Option<Child>,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Run the template with Sluice's HTTP check at `sluice` and the app at `app`.
    fn start(sluice: SocketAddr, app: SocketAddr) -> Self {
        let binary = nginx_binary();
        assert!(
            binary.exists(),
            "{} is missing: run scripts/setup (it installs Debian's nginx)",
            binary.display()
        );
        let mut last_error = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let conf = dir.path().join("nginx.conf");
            std::fs::write(&conf, fill(dir.path(), addr, sluice, app)).unwrap();
            let child = Command::new(&binary)
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
            let watcher = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "while kill -0 {parent} 2>/dev/null; do sleep 0.5; done; kill -9 {child} 2>/dev/null",
                    parent = std::process::id(),
                    child = child.id(),
                ))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok();
            let mut nginx = Self {
                addr,
                child,
                watcher,
                dir,
            };
            if nginx.ready() {
                return nginx;
            }
            last_error = nginx.error_log();
            // Dropped: stopped; the port was likely taken in between, so try another.
        }
        panic!("nginx did not start:\n{last_error}");
    }

    /// Wait (10 s at most) until nginx accepts connections; false if it exited.
    fn ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut watcher) = self.watcher.take() {
            let _ = watcher.kill();
            let _ = watcher.wait();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("nginx error.log:\n{}", self.error_log());
        }
    }
}

/// The template with its placeholders filled.
fn fill(prefix: &Path, listen: SocketAddr, sluice: SocketAddr, app: SocketAddr) -> String {
    let conf = TEMPLATE
        .replace("${PREFIX}", prefix.to_str().unwrap())
        .replace("${LISTEN}", &listen.to_string())
        .replace("${SLUICE_HTTP}", &sluice.to_string())
        .replace("${APP}", &app.to_string());
    assert!(!conf.contains("${"), "a placeholder is left:\n{conf}");
    conf
}

/// The app behind nginx: answers 200 "upstream" to everything and counts the requests.
struct App {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl App {
    async fn start() -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&hits);
        let router = axum::Router::new().fallback(move || {
            let counted = Arc::clone(&counted);
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                "upstream"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { addr, hits, task }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn header<'r>(response: &'r reqwest::Response, name: &str) -> Option<&'r str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

/// `"web.remote_address";r=R;t=T`: (R, T).
fn ratelimit(value: &str) -> (u64, u64) {
    let rest = value
        .strip_prefix(r#""web.remote_address";r="#)
        .unwrap_or_else(|| panic!("RateLimit: {value}"));
    let (r, t) = rest
        .split_once(";t=")
        .unwrap_or_else(|| panic!("RateLimit: {value}"));
    (r.parse().unwrap(), t.parse().unwrap())
}

sluice_tests::topology_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nginx_auth_request_limits_with_429_and_headers(topology, spec) {
        let sluice = start(spec, WEB, options("nginx")).await;
        let app = App::start().await;
        let nginx = Nginx::start(sluice.http, app.addr);
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();

        for left in (0..3u64).rev() {
            let response = client.get(nginx.url("/orders/7")).send().await.unwrap();
            assert_eq!(response.status(), 200, "{topology}: {response:?}");
            assert_eq!(header(&response, "ratelimit-policy"), Some(POLICY), "{topology}");
            let (r, t) = ratelimit(header(&response, "ratelimit").expect("RateLimit"));
            assert_eq!(r, left, "{topology}");
            assert!((1..=86_400).contains(&t), "{topology}: t={t}");
            assert_eq!(header(&response, "retry-after"), None, "{topology}");
            assert_eq!(response.text().await.unwrap(), "upstream", "{topology}");
        }

        for _ in 0..2 {
            let response = client.get(nginx.url("/orders/7")).send().await.unwrap();
            assert_eq!(response.status(), 429, "{topology}: {response:?}");
            assert_eq!(header(&response, "ratelimit-policy"), Some(POLICY), "{topology}");
            let (r, t) = ratelimit(header(&response, "ratelimit").expect("RateLimit"));
            assert_eq!(r, 0, "{topology}");
            let retry: u64 = header(&response, "retry-after")
                .expect("Retry-After")
                .parse()
                .unwrap();
            assert!((1..=86_400).contains(&retry), "{topology}: Retry-After {retry}");
            assert!(retry <= t, "{topology}: Retry-After {retry} after the reset {t}");
            assert_ne!(response.text().await.unwrap(), "upstream", "{topology}");
        }
        assert_eq!(app.hits.load(Ordering::SeqCst), 3, "{topology}: the app saw only the admitted requests");

        // Every check went through Sluice's HTTP front end: 3 admitted, 2 refused.
        let metrics = http_get(sluice.http, "/metrics").await.body;
        let decided = |result: &str| -> f64 {
            let label = format!(r#"result="{result}""#);
            metrics
                .lines()
                .filter(|l| l.starts_with("sluice_gateway_decisions_total{"))
                .filter(|l| l.contains(r#"domain="web""#) && l.contains(&label))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        assert_eq!(decided("ok") + decided("near_limit"), 3.0, "{topology}:\n{metrics}");
        assert_eq!(decided("over_limit"), 2.0, "{topology}:\n{metrics}");
        drop(nginx);
    }
}

/// `docs/GATEWAY.md`'s nginx recipe is the tested config, word for word.
#[test]
fn docs_show_the_tested_nginx_config() {
    let docs = include_str!("../../docs/GATEWAY.md");
    assert!(
        docs.contains(TEMPLATE.trim_end()),
        "docs/GATEWAY.md's nginx recipe differs from gateway/tests/nginx/nginx.conf.template"
    );
}
