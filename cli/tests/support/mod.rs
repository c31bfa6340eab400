//! Running the `sluice` binary from the CLI's test files.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::{
    io::Write,
    process::{Command, Output, Stdio},
};

/// Run `sluice ARGS` to completion (stdin empty).
pub fn sluice(args: &[&str]) -> Output {
    sluice_with_stdin(args, None)
}

/// Run `sluice ARGS` with `stdin` on its standard input.
pub fn sluice_with_stdin(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

/// What it wrote to stdout.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What it wrote to stderr.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Its stdout, parsed as one JSON value (the panic message shows both streams).
pub fn json(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text:?} / {}", String::from_utf8_lossy(&out.stderr)))
}

pub mod worker;
