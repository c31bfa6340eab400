//! `--tls-ca`, `--tls-cert`, `--tls-key` and the settings file's `[redis.tls]`, against a real
//! redis-server listening for TLS (certificates made by `openssl`), and bad files refused
//! naming the flag or field and the file.
#![allow(clippy::unwrap_used)]

mod support;

use sluice_tests::{RedisServer, tls::TlsFiles};
use support::{json, sluice, stderr};

const RULE: [&str; 6] = [
    "--algorithm",
    "sliding-log",
    "--limit",
    "1",
    "--window",
    "1m",
];

#[test]
fn flags_and_settings_connect_over_mutual_tls() {
    let files = TlsFiles::generate();
    let server = RedisServer::start_tls(&files.server(), &files.ca(), true);
    let url = server.tls_url().unwrap();
    let client = files.client();
    let (ca, cert, key) = (
        files.ca().to_str().unwrap().to_owned(),
        client.cert.to_str().unwrap().to_owned(),
        client.key.to_str().unwrap().to_owned(),
    );
    let mut args = vec![
        "limit",
        "check",
        "--redis",
        &url,
        "--tls-ca",
        &ca,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ];
    args.extend(RULE);
    args.push("flags");
    let first = sluice(&args);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_eq!(json(&first)["allowed"], true);
    assert_eq!(sluice(&args).status.code(), Some(1), "the second is denied");

    let settings = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(
        settings.path(),
        format!(
            "[redis]\nurl = \"{url}\"\n[redis.tls]\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n"
        ),
    )
    .unwrap();
    let mut args = vec![
        "--settings",
        settings.path().to_str().unwrap(),
        "limit",
        "check",
    ];
    args.extend(RULE);
    args.push("settings");
    let out = sluice(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // Without the client certificate the server refuses: an error, at once.
    let mut args = vec!["limit", "check", "--redis", &url, "--tls-ca", &ca];
    args.extend(RULE);
    args.push("nocert");
    let out = sluice(&args);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn bad_tls_files_name_the_flag_and_the_file() {
    let files = TlsFiles::generate();
    let missing = files.dir().join("missing-ca.pem");
    let mut args = vec![
        "limit",
        "check",
        "--redis",
        "rediss://127.0.0.1:1",
        "--tls-ca",
        missing.to_str().unwrap(),
    ];
    args.extend(RULE);
    args.push("k");
    let out = sluice(&args);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("--tls-ca") && err.contains("missing-ca.pem"),
        "{err}"
    );

    // A plain address with TLS files would silently not use them.
    let ca = files.ca();
    let mut args = vec![
        "limit",
        "check",
        "--redis",
        "redis://127.0.0.1:1",
        "--tls-ca",
        ca.to_str().unwrap(),
    ];
    args.extend(RULE);
    args.push("k");
    let out = sluice(&args);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("rediss://"), "{}", stderr(&out));

    // A certificate without its key: clap refuses it.
    let cert = files.client().cert;
    let out = sluice(&[
        "limit",
        "check",
        "--redis",
        "rediss://127.0.0.1:1",
        "--tls-cert",
        cert.to_str().unwrap(),
        "k",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--tls-key"), "{}", stderr(&out));
}
