//! Nothing a user types may crash the `sluice` binary, hang it, or leak a secret: each case
//! here was a reproduction first (issue 8), run against real Redis where it needs one.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

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
