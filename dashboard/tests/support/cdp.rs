//! A small Chrome DevTools Protocol client for the browser test: starts Debian's headless
//! `chromium` on a loopback debugging port (in a temporary profile), attaches to its page over
//! a websocket, and offers navigate, evaluate, wait-for and full-page screenshots. The browser
//! is killed (by its own PID) on drop.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    socket: Socket,
    next_id: u64,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The chromium binary on PATH (scripts/setup installs Debian's `chromium`).
fn chromium() -> String {
    for name in ["chromium", "chromium-browser"] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {name}"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        if let Some(path) = found.filter(|p| !p.is_empty()) {
            return path;
        }
    }
    panic!("chromium is not installed: run scripts/setup (it apt-get installs Debian's chromium)");
}

impl Browser {
    pub async fn start() -> Self {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(chromium())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1400,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Chromium writes the port it picked into the profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port: u16 = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()))
            {
                break port;
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not start within 30s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let list: Value = serde_json::from_str(
            &reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        )
        .unwrap();
        let page = list
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .unwrap_or_else(|| panic!("no page target in {list}"));
        let ws_url = page["webSocketDebuggerUrl"].as_str().unwrap().to_owned();
        let (socket, _) = tokio_tungstenite::connect_async(ws_url.as_str())
            .await
            .unwrap();
        let mut browser = Self {
            child,
            _profile: profile,
            socket,
            next_id: 0,
        };
        browser.call("Page.enable", json!({})).await;
        browser.call("Runtime.enable", json!({})).await;
        browser
    }

    /// Send one command and wait for its reply (events in between are skipped).
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({ "id": id, "method": method, "params": params });
        self.socket
            .send(Message::Text(msg.to_string().into()))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = tokio::time::timeout(left, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("no reply to {method} within 30s"));
            let Some(Ok(Message::Text(text))) = next else {
                continue;
            };
            let reply: Value = serde_json::from_str(&text).unwrap();
            if reply["id"] == id {
                if let Some(e) = reply.get("error") {
                    panic!("{method} failed: {e}");
                }
                return reply["result"].clone();
            }
        }
    }

    /// Evaluate `expr` in the page (promises awaited); its value.
    pub async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expr} threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Poll `expr` until it is `true` or `limit` passes.
    pub async fn wait_for(&mut self, expr: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.eval(expr).await == Value::Bool(true) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Open `url` and wait for the page to load.
    pub async fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url })).await;
        assert!(
            self.wait_for(
                "document.readyState === 'complete'",
                Duration::from_secs(20)
            )
            .await,
            "{url} did not load"
        );
    }

    /// A PNG of the whole page.
    pub async fn screenshot(&mut self, path: &Path) {
        let height = self
            .eval("Math.ceil(document.documentElement.scrollHeight)")
            .await
            .as_f64()
            .unwrap_or(1000.0)
            .clamp(600.0, 4000.0);
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1400, "height": height as u64, "deviceScaleFactor": 1, "mobile": false }),
        )
        .await;
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        self.call("Emulation.clearDeviceMetricsOverride", json!({}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}
