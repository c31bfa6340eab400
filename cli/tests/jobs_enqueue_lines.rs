//! `sluice jobs enqueue --lines FILE|-` with the real binary on real Redis (standalone and
//! Cluster): newline-delimited JSON, one job a line; bad lines reported by number with the
//! reason while the good ones are enqueued (byte for byte, in order); bad flags refused.
#![allow(clippy::unwrap_used)]

mod support;

use sluice_shared::Keyspace;
use support::{json, sluice, sluice_with_stdin, stderr};

/// The stored `payload` of every entry of the topic stream, oldest first.
fn stored(spec: &str, prefix: &str, topic: &str) -> Vec<String> {
    let key = Keyspace::new(prefix.to_owned())
        .unwrap()
        .key(topic.as_bytes(), &["stream"]);
    sluice_tests::stream_field(spec, &key, "payload")
        .into_iter()
        .map(|p| String::from_utf8(p).unwrap())
        .collect()
}

sluice_tests::topology_test! {
    #[test]
    fn good_lines_are_enqueued_and_bad_ones_reported_by_number(name, spec) {
        let prefix = sluice_tests::unique_prefix("lines");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("jobs.ndjson");
        let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(300));
        let mut text: Vec<u8> = Vec::new();
        for line in [
            r#"{"n":1}"#,                 // 1
            r#"{"n":2,"z":1,"a":-0}"#,    // 2: stored as given
            r#"{"n":"#,                   // 3: truncated
            "",                           // 4: blank, skipped
            "  {\"n\":5}  \r",            // 5: surrounding space and CR trimmed
            "not json",                   // 6
            big.as_str(),                 // 7: over --max-payload-bytes
            r#"{"n":8} {"n":9}"#,         // 8: two documents
        ] {
            text.extend_from_slice(line.as_bytes());
            text.push(b'\n');
        }
        text.extend_from_slice(b"\"\xff\"\n"); // 9: not UTF-8
        // 10..=1209: enough for several batches; the last line has no newline.
        let many: Vec<String> = (10..1210).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
        text.extend_from_slice(many.join("\n").as_bytes());
        std::fs::write(&file, &text).unwrap();

        let out = sluice(&[
            "jobs", "enqueue", "--redis", spec, "--prefix", &prefix, "--topic", "t",
            "--lines", file.to_str().unwrap(), "--batch", "250", "--max-payload-bytes", "200",
        ]);
        assert_eq!(out.status.code(), Some(1), "{name}: {out:?}");
        let summary = json(&out);
        assert_eq!(summary["enqueued"], 3 + 1200, "{name}: {summary}");
        let rejected = summary["rejected"].as_array().unwrap();
        let lines: Vec<u64> = rejected.iter().map(|r| r["line"].as_u64().unwrap()).collect();
        assert_eq!(lines, [3, 6, 7, 8, 9], "{name}: {summary}");
        let reasons: Vec<&str> = rejected.iter().map(|r| r["reason"].as_str().unwrap()).collect();
        assert!(reasons[0].starts_with("not valid JSON"), "{name}: {summary}");
        assert!(reasons[2].contains("over --max-payload-bytes 200"), "{name}: {summary}");
        assert!(reasons[3].starts_with("not valid JSON: trailing characters"), "{name}: {summary}");
        assert!(reasons[4].starts_with("not UTF-8"), "{name}: {summary}");

        // Every good line, byte for byte, in file order; nothing else.
        let mut expected = vec![r#"{"n":1}"#.to_owned(), r#"{"n":2,"z":1,"a":-0}"#.to_owned(), r#"{"n":5}"#.to_owned()];
        expected.extend(many);
        assert_eq!(stored(spec, &prefix, "t"), expected, "{name}");

        // From stdin, all good: exit 0, an empty rejected list.
        let out = sluice_with_stdin(
            &["jobs", "enqueue", "--redis", spec, "--prefix", &prefix, "--topic", "u", "--lines", "-"],
            Some("{\"a\":1}\n[2]\n\"three\"\n"),
        );
        assert_eq!(out.status.code(), Some(0), "{name}: {out:?}");
        assert_eq!(json(&out), serde_json::json!({"enqueued": 3, "rejected": []}), "{name}");
        assert_eq!(stored(spec, &prefix, "u"), [r#"{"a":1}"#, "[2]", r#""three""#], "{name}");
    }
}

#[test]
fn bad_lines_flags_are_refused() {
    let base = [
        "jobs",
        "enqueue",
        "--redis",
        "redis://127.0.0.1:1",
        "--topic",
        "t",
    ];
    let out = sluice(&[&base[..], &["--lines", "/nonexistent/jobs.ndjson"]].concat());
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr(&out).contains("--lines: cannot open /nonexistent/jobs.ndjson"),
        "{out:?}"
    );
    for extra in [
        &["--lines", "-", "--payload", "{}"][..],
        &["--lines", "-", "--delay", "1s"][..],
        &["--lines", "-", "--batch", "0"][..],
        &["--payload", "{}", "--batch", "10"][..],
        &[][..],
    ] {
        let out = sluice(&[&base[..], extra].concat());
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{extra:?}: {out:?}");
    }
}

#[test]
fn redis_failing_mid_way_says_which_lines_are_in() {
    use std::{
        io::Write,
        process::{Command, Stdio},
        time::{Duration, Instant},
    };
    let mut server = sluice_tests::RedisServer::start();
    let url = server.url();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "jobs", "enqueue", "--redis", &url, "--prefix", "mid", "--topic", "t",
        ])
        .args(["--lines", "-", "--batch", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"{\"n\":1}\n{\"n\":2}\nbad\n{\"n\":4}\n")
        .unwrap();
    stdin.flush().unwrap();
    // Batches of one: each good line is written as soon as it is read.
    let start = Instant::now();
    while stored(&url, "mid", "t").len() < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the first lines never arrived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill();
    stdin.write_all(b"{\"n\":5}\n{\"n\":6}\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let summary = json(&out);
    assert_eq!(summary["enqueued"], 3, "{summary}");
    assert_eq!(summary["rejected"][0]["line"], 3, "{summary}");
    assert_eq!(
        summary["unconfirmed_lines"],
        serde_json::json!([5, 5]),
        "{summary}"
    );
    assert!(summary["error"].is_string(), "{summary}");
    let err = stderr(&out);
    assert!(err.contains("lines before 5 are enqueued"), "{err}");
}
