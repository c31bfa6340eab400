//! Nothing a user types may crash the `sluice` binary, hang it, or leak a secret: each case
//! here was a reproduction first (issue 8), run against real Redis where it needs one.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use support::{sluice, stderr};

#[test]
fn runtime_threads_are_validated() {
    let redis = sluice_tests::standalone_url();
    for threads in ["0", "65", "100000"] {
        let out = sluice(&[
            "--threads",
            threads,
            "jobs",
            "stats",
            "--redis",
            &redis,
            "--topic",
            "t",
        ]);
        assert_eq!(out.status.code(), Some(2), "--threads {threads}: {out:?}");
        let err = stderr(&out);
        assert!(err.contains("--threads"), "{err}");
        assert!(err.contains("1..=64"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// Every command that takes `--redis`, with a URL carrying a password, against `redis`.
fn every_command(redis: &str, prefix: &str) -> Vec<Vec<String>> {
    let rule = "--algorithm gcra --limit 5 --window 1s";
    let cmds = [
        format!("limit check --redis {redis} --prefix {prefix} {rule} k"),
        format!("limit peek --redis {redis} --prefix {prefix} {rule} k"),
        format!("limit reset --redis {redis} --prefix {prefix} {rule} k"),
        format!("jobs enqueue --redis {redis} --prefix {prefix} --topic t --payload {{}}"),
        format!("jobs stats --redis {redis} --prefix {prefix} --topic t"),
        format!("jobs dlq list --redis {redis} --prefix {prefix} --topic t"),
        format!("jobs dlq replay --redis {redis} --prefix {prefix} --topic t --all"),
        format!(
            "loadtest limit --redis {redis} --prefix {prefix} {rule} --duration 1s --keys 2 \
             --concurrency 2"
        ),
        format!(
            "loadtest jobs --redis {redis} --prefix {prefix} --jobs 10 --batch 10 --timeout 5s"
        ),
    ];
    cmds.iter()
        .map(|c| c.split_whitespace().map(str::to_owned).collect())
        .collect()
}

#[test]
fn no_error_shows_the_password() {
    let secret = "s3cret-pw";
    let mut server = sluice_tests::RedisServer::start();
    let mut admin = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("right-password")
        .query(&mut admin)
        .unwrap();
    let port = server.port();
    let dead = sluice_tests::free_port();
    let targets = [
        // A live server refusing the password.
        format!("redis://:{secret}@127.0.0.1:{port}"),
        format!("redis://user:{secret}@127.0.0.1:{port}"),
        // Nothing listening.
        format!("redis://:{secret}@127.0.0.1:{dead}"),
        format!("redis+cluster://:{secret}@127.0.0.1:{dead}"),
        // Malformed.
        format!("redis://:{secret}@127.0.0.1:99999"),
        format!("http://:{secret}@127.0.0.1:{port}"),
    ];
    for target in &targets {
        for args in every_command(target, "secrets") {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = sluice(&args);
            let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
            assert_ne!(out.status.code(), Some(0), "{args:?} succeeded: {all}");
            assert!(
                !all.contains(secret),
                "{args:?} printed the password: {all}"
            );
            assert!(!all.contains("panicked"), "{args:?}: {all}");
        }
    }
    server.kill();
}

#[test]
fn a_full_disk_is_an_error_not_a_panic() {
    let redis = sluice_tests::standalone_url();
    let prefix = sluice_tests::unique_prefix("full");
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    for args in [
        vec![
            "limit",
            "check",
            "--redis",
            &redis,
            "--prefix",
            &prefix,
            "--algorithm",
            "gcra",
            "--limit",
            "5",
            "--window",
            "1s",
            "k",
        ],
        vec![
            "jobs",
            "enqueue",
            "--redis",
            &redis,
            "--prefix",
            &prefix,
            "--topic",
            "t",
            "--payload",
            "{\"n\":1}",
        ],
        vec![
            "jobs", "stats", "--redis", &redis, "--prefix", &prefix, "--topic", "t",
        ],
        vec!["limit", "script", "--algorithm", "sliding-log"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(&args)
            .stdout(full())
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("cannot write the output"), "{args:?}: {err}");
        assert!(err.contains("No space left on device"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// `sluice ... | head -1`: a closed stdout pipe ends the command quietly, status 141.
#[test]
fn a_closed_pipe_ends_quietly() {
    // The reader is gone before the child starts, so its first write meets a closed pipe.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["limit", "script", "--algorithm", "sliding-log"])
        .stdout(std::process::Stdio::from(writer))
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(141), "{err}");
    assert!(err.is_empty(), "a closed pipe must end quietly: {err}");
}
