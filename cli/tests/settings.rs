//! One settings schema for every command: a file and `SLUICE_*` variables, flags over both.
#![allow(clippy::unwrap_used)]

mod support;

use support::{json, sluice, stderr};

fn settings_file(text: &str) -> tempfile::NamedTempFile {
    let f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(f.path(), text).unwrap();
    f
}

sluice_tests::topology_test! {
    #[test]
    fn redis_and_prefix_come_from_the_settings_file(name, spec) {
        let prefix = sluice_tests::unique_prefix("settings");
        let urls: Vec<String> = spec.split(',').map(|u| format!("\"{u}\"")).collect();
        let redis = if urls.len() == 1 {
            format!("url = {}", urls[0])
        } else {
            format!("urls = [{}]", urls.join(", "))
        };
        let f = settings_file(&format!("prefix = \"{prefix}\"\n[redis]\n{redis}\n"));
        let path = f.path().to_str().unwrap();
        let rule = ["--algorithm", "sliding-log", "--limit", "1", "--window", "1m"];
        let mut args = vec!["--settings", path, "limit", "check"];
        args.extend(rule);
        args.push("k");
        let out = sluice(&args);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
        assert_eq!(json(&out)["remaining"], 0, "{name}");
        // Same prefix from the file: the key is now full.
        assert_eq!(sluice(&args).status.code(), Some(1), "{name}");
        // A flag beats the file: another prefix, a fresh key.
        let other = sluice_tests::unique_prefix("flag");
        let mut args = vec!["--settings", path, "limit", "check", "--prefix", &other];
        args.extend(rule);
        args.push("k");
        assert_eq!(sluice(&args).status.code(), Some(0), "{name}");
    }
}

#[test]
fn a_bad_settings_file_names_itself_and_the_field() {
    let f = settings_file("[redis]\nurl = \"redis://127.0.0.1:6379\"\ntimeout = \"1s\"\n");
    let path = f.path().to_str().unwrap();
    let out = sluice(&["--settings", path, "jobs", "stats", "--topic", "t"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains(path), "{err}");
    assert!(err.contains("timeout"), "{err}");
    let out = sluice(&["jobs", "stats", "--topic", "t"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--redis: missing"),
        "{}",
        stderr(&out)
    );
}
