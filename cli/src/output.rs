//! Everything the CLI writes goes through here, so no write can panic: `println!` panics when
//! stdout fails (`sluice ... > /dev/full`), and a closed pipe (`sluice ... | head -1`) would
//! print a backtrace.
//!
//! A closed pipe ends the command quietly with status 141 (128 + SIGPIPE, what a shell shows
//! for a tool the signal ended); any other failure (a full disk) is an error naming the cause.
//! Messages to stderr are best effort: if stderr itself is gone there is no one to tell.

use std::{
    fmt::Display,
    io::{self, Write},
};

use crate::Failure;

/// One line to stdout.
pub(crate) fn line(text: impl Display) -> Result<(), Failure> {
    write(|out| writeln!(out, "{text}"))
}

/// Text to stdout as it is (no newline added).
pub(crate) fn text(text: &str) -> Result<(), Failure> {
    write(|out| out.write_all(text.as_bytes()))
}

/// A value as one line of JSON to stdout.
pub(crate) fn json(value: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string(value)
        .map_err(|e| Failure::new(format!("cannot print the result: {e}")))?;
    line(text)
}

/// A message to stderr, prefixed `sluice: `.
pub(crate) fn warn(message: impl Display) {
    let _ = writeln!(io::stderr().lock(), "sluice: {message}");
}

fn write(f: impl FnOnce(&mut io::StdoutLock<'static>) -> io::Result<()>) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    f(&mut out)
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            io::ErrorKind::BrokenPipe => Failure::broken_pipe(),
            _ => Failure::new(format!("cannot write the output: {e}")),
        })
}
