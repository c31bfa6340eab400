//! `--exec 'CMD ARGS'`: one process per job.
//!
//! The words are split like a POSIX shell would (`shlex`: quotes and backslashes), but no shell
//! runs unless the user writes `sh -c '...'`. The program is looked up (`PATH` or the path
//! given) and checked to be an executable file at start-up.
//!
//! Per job: the payload on stdin; `SLUICE_JOB_ID`, `SLUICE_JOB_ATTEMPT`, `SLUICE_TOPIC`,
//! `SLUICE_GROUP` in the environment; stdout goes to the worker's stderr (the worker's stdout
//! carries only its report); stderr is passed through to the worker's stderr too, and its last
//! [`TAIL_BYTES`] are kept as the error of a failed attempt (and so of a dead letter).
//!
//! Exit status 0 acknowledges; 65 (`EX_DATAERR`) dead-letters at once; 75 (`EX_TEMPFAIL`) and
//! any other status, or death by a signal, is a failed attempt (retried with backoff). Each
//! process leads a process group of its own, so a terminal's Ctrl-C reaches only the worker
//! (which drains); past `--job-timeout`, or when the drain deadline cancels the job, the whole
//! group gets SIGKILL (children the command started included).

use std::{
    os::unix::{fs::PermissionsExt, process::ExitStatusExt},
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::Duration,
};

use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    process::Command,
};

use super::{JobInfo, Outcome};
use crate::Failure;

/// Bytes of a command's stderr kept as the error of a failed attempt.
pub(super) const TAIL_BYTES: usize = 2048;

/// `EX_DATAERR` (sysexits.h): the input was bad; dead-letter now.
const EX_DATAERR: i32 = 65;
/// `EX_TEMPFAIL` (sysexits.h): try again later.
const EX_TEMPFAIL: i32 = 75;

/// A checked command line.
#[derive(Debug)]
pub(super) struct Exec {
    program: PathBuf,
    args: Vec<String>,
    timeout: Duration,
}

impl Exec {
    /// Split `spec` and check its program: a start-up error naming `--exec` otherwise.
    pub(super) fn parse(spec: &str, timeout: Duration) -> Result<Self, Failure> {
        let words = shlex::split(spec)
            .ok_or_else(|| Failure::flag("exec", "unbalanced quotes or a trailing backslash"))?;
        let mut words = words.into_iter();
        let program = words
            .next()
            .ok_or_else(|| Failure::flag("exec", "no command given"))?;
        let program = find_program(&program).map_err(|e| Failure::flag("exec", e))?;
        Ok(Self {
            program,
            args: words.collect(),
            timeout,
        })
    }

    pub(super) async fn run(&self, job: &JobInfo<'_>, payload: &[u8]) -> Outcome {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .env("SLUICE_JOB_ID", job.id)
            .env("SLUICE_JOB_ATTEMPT", job.attempt.to_string())
            .env("SLUICE_TOPIC", job.topic)
            .env("SLUICE_GROUP", job.group)
            .stdin(Stdio::piped())
            .stdout(Stdio::from(std::io::stderr()))
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                return Outcome::Retry(
                    format!("cannot start {}: {e}", self.program.display()),
                    None,
                );
            }
        };
        // Killed with its whole group if this future is dropped before the process is reaped
        // (the drain deadline passed): nothing the job started outlives it.
        let mut group = GroupGuard(child.id().and_then(|id| i32::try_from(id).ok()));
        let stdin = child.stdin.take();
        let stderr = child.stderr.take();
        let mut tail = Tail::default();
        let mut read_stderr = Box::pin(async {
            if let Some(stderr) = stderr {
                tail.read_from(stderr).await;
            }
        });
        let mut stderr_done = false;
        let waited = tokio::time::timeout(self.timeout, async {
            let feed = async {
                if let Some(mut stdin) = stdin {
                    // A command that exits without reading its input is not an error here
                    // (its exit status says how the job went).
                    let _ = stdin.write_all(payload).await;
                }
            };
            let run = async { tokio::join!(feed, child.wait()).1 };
            tokio::pin!(run);
            loop {
                tokio::select! {
                    status = &mut run => break status,
                    () = &mut read_stderr, if !stderr_done => stderr_done = true,
                }
            }
        })
        .await;
        let timed_out = waited.is_err();
        if timed_out {
            group.kill();
            let _ = child.wait().await;
        }
        group.disarm();
        if !stderr_done {
            // A process the command left behind may hold stderr open: don't wait for it long.
            let _ = tokio::time::timeout(Duration::from_millis(200), &mut read_stderr).await;
        }
        drop(read_stderr);
        let tail = tail.text();
        match waited {
            Err(_) => Outcome::Timeout(format!(
                "timed out after {} (--job-timeout); process group killed{}",
                humantime::format_duration(self.timeout),
                with_stderr(&tail)
            )),
            Ok(Err(e)) => Outcome::Retry(format!("cannot wait for the command: {e}"), None),
            Ok(Ok(status)) => outcome(status, &tail),
        }
    }
}

/// The outcome of an exit status, with the stderr tail as the message.
fn outcome(status: ExitStatus, tail: &str) -> Outcome {
    match (status.code(), status.signal()) {
        (Some(0), _) => Outcome::Success,
        (Some(EX_DATAERR), _) => {
            Outcome::DeadLetter(format!("exit status 65 (EX_DATAERR){}", with_stderr(tail)))
        }
        (Some(EX_TEMPFAIL), _) => Outcome::Retry(
            format!("exit status 75 (EX_TEMPFAIL){}", with_stderr(tail)),
            None,
        ),
        (Some(code), _) => Outcome::Retry(format!("exit status {code}{}", with_stderr(tail)), None),
        (None, Some(signal)) => Outcome::Retry(
            format!("killed by signal {signal}{}", with_stderr(tail)),
            None,
        ),
        (None, None) => Outcome::Retry(format!("ended with {status}{}", with_stderr(tail)), None),
    }
}

fn with_stderr(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {tail}")
    }
}

/// The program to run: a path (with a `/`) as given, else the first match on `PATH`; either
/// way an executable regular file.
fn find_program(program: &str) -> Result<PathBuf, String> {
    if program.contains('/') {
        let path = Path::new(program);
        return match std::fs::metadata(path) {
            Err(e) => Err(format!("cannot run {program}: {e}")),
            Ok(m) if !m.is_file() => Err(format!("cannot run {program}: not a file")),
            Ok(m) if m.permissions().mode() & 0o111 == 0 => {
                Err(format!("cannot run {program}: not executable"))
            }
            Ok(_) => Ok(path.to_owned()),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| format!("cannot run {program}: no executable of that name on PATH"))
}

/// SIGKILL to a process group, unless disarmed (the leader was reaped) first.
struct GroupGuard(Option<i32>);

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.0 {
            // ESRCH (the group is gone already) is fine.
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }

    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last [`TAIL_BYTES`] of a stream, which is also passed through to the worker's stderr.
#[derive(Debug, Default)]
struct Tail {
    kept: Vec<u8>,
}

impl Tail {
    async fn read_from(&mut self, mut from: impl AsyncRead + Unpin) {
        let mut buf = [0u8; 4096];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let chunk = &buf[..n];
                    {
                        use std::io::Write;
                        let _ = std::io::stderr().lock().write_all(chunk);
                    }
                    self.kept.extend_from_slice(chunk);
                    if self.kept.len() > TAIL_BYTES {
                        let cut = self.kept.len() - TAIL_BYTES;
                        self.kept.drain(..cut);
                    }
                }
            }
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.kept).trim().to_owned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn exit_statuses_map_to_outcomes() {
        let status = |code: i32| ExitStatus::from_raw(code << 8);
        assert_eq!(outcome(status(0), "x"), Outcome::Success);
        assert!(
            matches!(outcome(status(65), "bad"), Outcome::DeadLetter(m) if m.ends_with(": bad"))
        );
        assert!(matches!(outcome(status(75), ""), Outcome::Retry(m, None) if m.contains("75")));
        assert!(matches!(outcome(status(1), ""), Outcome::Retry(m, None) if m == "exit status 1"));
        assert!(
            matches!(outcome(ExitStatus::from_raw(9), ""), Outcome::Retry(m, None) if m.contains("signal 9"))
        );
    }

    #[test]
    fn programs_are_checked() {
        assert!(find_program("sh").is_ok());
        assert!(
            find_program("no-such-program-sluice")
                .unwrap_err()
                .contains("PATH")
        );
        assert!(find_program("/nonexistent/x").is_err());
        let plain = tempfile::NamedTempFile::new().unwrap();
        std::fs::set_permissions(plain.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        let plain = plain.path().to_str().unwrap();
        assert!(find_program(plain).unwrap_err().contains("not executable"));
        assert!(find_program("/tmp").unwrap_err().contains("not a file"));
        assert!(Exec::parse("'unterminated", Duration::from_secs(1)).is_err());
        assert!(Exec::parse("", Duration::from_secs(1)).is_err());
        let e = Exec::parse("sh -c 'echo \"a b\"'", Duration::from_secs(1)).unwrap();
        assert_eq!(e.args, ["-c", "echo \"a b\""]);
    }
}
