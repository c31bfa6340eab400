//! `sluice dashboard`: bad flags and settings get a clear error naming them (exit 2); a good run
//! prints its URL, serves the page and the API, and stops on SIGTERM with exit 0.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use support::{sluice, stderr};

fn settings_file(text: &str) -> tempfile::NamedTempFile {
    let f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(f.path(), text).unwrap();
    f
}

#[test]
fn bad_dashboard_input_names_the_flag_or_the_setting() {
    let redis = sluice_tests::standalone_url();
    let out = sluice(&["dashboard", "--redis", &redis, "--refresh", "0s"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--refresh: must be 100ms to 1m"),
        "{}",
        stderr(&out)
    );
    let f = settings_file("[dashboard]\nuser = \"ops\"\n");
    let out = sluice(&[
        "--settings",
        f.path().to_str().unwrap(),
        "dashboard",
        "--redis",
        &redis,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("dashboard.password"),
        "{}",
        stderr(&out)
    );
    let f = settings_file("[dashboard]\nread_only = \"sometimes\"\n");
    let out = sluice(&[
        "--settings",
        f.path().to_str().unwrap(),
        "dashboard",
        "--redis",
        &redis,
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("read_only") && err.contains(f.path().to_str().unwrap()),
        "{err}"
    );
    // An address already taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = sluice(&["dashboard", "--redis", &redis, "--addr", &addr]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!("cannot listen on {addr}")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_dashboard_prints_its_url_serves_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "dashboard",
            "--redis",
            &sluice_tests::standalone_url(),
            "--read-only",
        ])
        .args([
            "--addr",
            "127.0.0.1:0",
            "--prefix",
            &sluice_tests::unique_prefix("dash-cli"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "sluice dashboard: http://127.0.0.1:P/ (redis ..., prefix ..., read-only)"
    assert!(line.contains("read-only"), "{line}");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_owned();
    let mut s = TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "GET /api/session HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"read_only\":true"), "{text}");
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
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
            let _ = child.wait();
            panic!("sluice dashboard did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
}
