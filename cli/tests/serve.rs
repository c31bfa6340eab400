//! `sluice serve`: `--check` exit codes, and a real server process answering, then draining
//! on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use support::{sluice, stderr};

const VALID: &str = "domain: test-domain\ndescriptors:\n  - key: key1\n    value: value1\n    rate_limit: {unit: minute, requests_per_unit: 3}\n";
const DUPLICATE: &str = "domain: test-domain\ndescriptors:\n  - key: key1\n    value: value1\n    rate_limit: {unit: minute, requests_per_unit: 3}\n  - key: key1\n    value: value1\n    rate_limit: {unit: hour, requests_per_unit: 3}\n";

fn config(text: &str) -> tempfile::NamedTempFile {
    let f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(f.path(), text).unwrap();
    f
}

#[test]
fn check_exits_0_for_a_valid_config_and_2_naming_the_file_and_the_problem() {
    let f = config(VALID);
    let path = f.path().to_str().unwrap();
    let out = sluice(&["serve", "--check", "--config", path]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("valid, 1 domain(s): test-domain"),
        "{stdout}"
    );

    let bad = config(DUPLICATE);
    let bad_path = bad.path().to_str().unwrap();
    let out = sluice(&["serve", "--check", "--config", bad_path]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains(bad_path), "{err}");
    assert!(
        err.contains("duplicate descriptor composite key 'test-domain.key1_value1'"),
        "{err}"
    );

    let out = sluice(&["serve", "--check", "--config", "/nonexistent/rl.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/rl.yaml"),
        "{}",
        stderr(&out)
    );
    let out = sluice(&["serve", "--check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--config: missing"),
        "{}",
        stderr(&out)
    );
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    (status, text)
}

/// The server process, killed on drop if the test fails before stopping it.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn serve_answers_then_drains_on_sigterm() {
    let f = config(VALID);
    let settings = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(
        settings.path(),
        format!(
            "prefix = \"{}\"\n[serve]\nlegacy_headers = true\n",
            sluice_tests::unique_prefix("serve-bin")
        ),
    )
    .unwrap();
    let mut guard = Guard(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["--settings", settings.path().to_str().unwrap(), "serve"])
            .args(["--redis", &sluice_tests::standalone_url()])
            .args(["--config", f.path().to_str().unwrap()])
            .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut guard.0;
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "sluice serve: grpc 127.0.0.1:P, http 127.0.0.1:Q, config ..., redis ..."
    let http: SocketAddr = line
        .split("http ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("{line:?}"))
        .parse()
        .unwrap();
    let (status, text) = http_get(http, "/v1/check?domain=test-domain&descriptor=key1:value1");
    assert_eq!(status, 200, "{text}");
    let lower = text.to_ascii_lowercase();
    assert!(
        lower.contains("ratelimit-policy: \"test-domain.key1_value1\";q=3;w=60"),
        "{text}"
    );
    assert!(lower.contains("x-ratelimit-remaining: 2"), "{text}");
    assert_eq!(http_get(http, "/healthz").0, 200);

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sluice serve did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(TcpStream::connect_timeout(&http, Duration::from_secs(1)).is_err());
}
