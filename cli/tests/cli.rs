//! The `sluice` binary end to end against real Redis (standalone and Cluster): exit codes,
//! JSON output, clear errors, and short bounded load-test runs whose accuracy oracles hold.
#![allow(clippy::unwrap_used)]

mod support;

use support::{json, sluice};

sluice_tests::topology_test! {
    #[test]
    fn limit_check_exit_codes_and_json(name, spec) {
        let redis = spec; // RedisConfig::parse reads comma-separated URLs as a cluster
        let prefix = sluice_tests::unique_prefix("cli");
        let args = [
            "limit",
            "check",
            "--redis",
            redis,
            "--prefix",
            &prefix,
            "--algorithm",
            "sliding-log",
            "--limit",
            "2",
            "--window",
            "1m",
            "user:{7}",
        ];
        for remaining in [1, 0] {
            let out = sluice(&args);
            assert_eq!(out.status.code(), Some(0), "{name}: {out:?}");
            let d = json(&out);
            assert_eq!(d["allowed"], true);
            assert_eq!(d["remaining"], remaining);
            assert_eq!(d["source"], "redis");
        }
        let out = sluice(&args);
        assert_eq!(out.status.code(), Some(1), "{name}: denied exits 1");
        let d = json(&out);
        assert_eq!(d["allowed"], false);
        assert!(d["retry_after_us"].as_u64().unwrap() > 0);
    }
}

#[test]
fn bad_input_exits_2_and_names_the_flag() {
    let redis = sluice_tests::standalone_url();
    let cases: [(&[&str], &str); 4] = [
        (
            &["--algorithm", "gcra", "--limit", "1", "--window", "10x"],
            "--window",
        ),
        (
            &["--algorithm", "gcra", "--limit", "0", "--window", "1s"],
            "--limit",
        ),
        (
            &[
                "--algorithm",
                "sliding-counter",
                "--limit",
                "1",
                "--window",
                "1s",
                "--granularity",
                "300ms",
            ],
            "--granularity",
        ),
        (
            &[
                "--algorithm",
                "sliding-log",
                "--limit",
                "1",
                "--window",
                "1s",
                "--burst",
                "3",
            ],
            "--burst",
        ),
    ];
    for (flags, named) in cases {
        let mut args = vec!["limit", "check", "--redis", redis.as_str()];
        args.extend_from_slice(flags);
        args.push("k");
        let out = sluice(&args);
        assert_eq!(out.status.code(), Some(2), "{flags:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(named), "{flags:?}: {err}");
    }
    let port = sluice_tests::free_port();
    let dead = format!("redis://127.0.0.1:{port}");
    let out = sluice(&[
        "limit",
        "check",
        "--redis",
        &dead,
        "--algorithm",
        "gcra",
        "--limit",
        "1",
        "--window",
        "1s",
        "k",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unavailable"));
}

sluice_tests::topology_test! {
    #[test]
    fn loadtest_limit_reports_zero_violations_for_the_exact_algorithms(name, spec) {
        let redis = spec; // RedisConfig::parse reads comma-separated URLs as a cluster
        for algorithm in [["sliding-log", "--limit"], ["gcra", "--limit"]] {
            let prefix = sluice_tests::unique_prefix("lt");
            let out = sluice(&[
                "loadtest",
                "limit",
                "--redis",
                redis,
                "--prefix",
                &prefix,
                "--algorithm",
                algorithm[0],
                algorithm[1],
                "20",
                "--window",
                "100ms",
                "--keys",
                "4",
                "--distribution",
                "uniform",
                "--concurrency",
                "16",
                "--connections",
                "2",
                "--duration",
                "1s",
                "--json",
            ]);
            assert_eq!(out.status.code(), Some(0), "{name} {algorithm:?}: {out:?}");
            let r = json(&out);
            assert_eq!(r["kind"], "limit");
            assert!(r["decisions"].as_u64().unwrap() > 100, "{name}: {r}");
            assert!(
                r["allowed"].as_u64().unwrap() > 0 && r["denied"].as_u64().unwrap() > 0,
                "{name}: {r}"
            );
            assert_eq!(
                r["accuracy"]["windows_over_limit"], 0,
                "{name} {algorithm:?}: {r}"
            );
            assert_eq!(r["errors"], 0);
        }
    }
}

sluice_tests::topology_test! {
    #[test]
    fn loadtest_jobs_loses_nothing(name, spec) {
        let redis = spec; // RedisConfig::parse reads comma-separated URLs as a cluster
        let prefix = sluice_tests::unique_prefix("ltj");
        let out = sluice(&[
            "loadtest",
            "jobs",
            "--redis",
            redis,
            "--prefix",
            &prefix,
            "--jobs",
            "2000",
            "--batch",
            "200",
            "--workers",
            "2",
            "--concurrency",
            "20",
            "--handler",
            "fail:0.1",
            "--idle-probes",
            "20",
            "--timeout",
            "60s",
            "--json",
        ]);
        assert_eq!(out.status.code(), Some(0), "{name}: {out:?}");
        let r = json(&out);
        assert_eq!(r["kind"], "jobs");
        assert_eq!(r["enqueued"], 2000, "{name}: {r}");
        assert_eq!(r["lost"], 0, "{name}: {r}");
        assert!(
            r["retries"].as_u64().unwrap() > 0,
            "{name}: fail:0.1 must cause retries: {r}"
        );
        assert_eq!(r["idle_latency_us"]["count"], 20, "{name}: {r}");
    }
}
