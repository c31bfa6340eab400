//! Driving `sluice jobs work` (a long-running process) and reading what it did, for the
//! worker CLI tests.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use super::{json, sluice, sluice_with_stdin, stderr};

/// Where a topic lives: `--redis SPEC --prefix P --topic T`.
#[derive(Debug, Clone)]
pub struct Target {
    pub spec: String,
    pub prefix: String,
    pub topic: String,
}

impl Target {
    pub fn new(spec: &str, test: &str) -> Self {
        Self {
            spec: spec.to_owned(),
            prefix: sluice_tests::unique_prefix(test),
            topic: "t".to_owned(),
        }
    }

    /// `--redis SPEC --prefix P --topic T`.
    pub fn flags(&self) -> Vec<String> {
        [
            "--redis",
            &self.spec,
            "--prefix",
            &self.prefix,
            "--topic",
            &self.topic,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }

    /// Enqueue one job per line with `sluice jobs enqueue --lines -`; panics unless all went.
    pub fn enqueue(&self, payloads: &[String]) {
        let mut args = vec!["jobs".to_owned(), "enqueue".to_owned()];
        args.extend(self.flags());
        args.extend(["--lines".to_owned(), "-".to_owned()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let text = payloads.join("\n");
        let out = sluice_with_stdin(&args, Some(&text));
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert_eq!(json(&out)["enqueued"], payloads.len() as u64, "{out:?}");
    }

    fn run(&self, sub: &[&str]) -> serde_json::Value {
        let mut args: Vec<String> = vec!["jobs".to_owned()];
        args.extend(sub.iter().map(|s| (*s).to_owned()));
        args.extend(self.flags());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = sluice(&args);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        json(&out)
    }

    /// `sluice jobs stats`: the row of `group`, if it exists.
    pub fn group_stats(&self, group: &str) -> Option<serde_json::Value> {
        let stats = self.run(&["stats"]);
        stats["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["group"] == group)
            .cloned()
    }

    /// True once `group` has nothing pending, nothing waiting for a retry and nothing unread.
    pub fn drained(&self, group: &str) -> bool {
        self.group_stats(group).is_some_and(|g| {
            g["pending"] == 0 && g["delayed"] == 0 && (g["lag"].is_null() || g["lag"] == 0)
        })
    }

    /// Every dead letter (`sluice jobs dlq list`).
    pub fn dead_letters(&self) -> Vec<serde_json::Value> {
        self.run(&["dlq", "list"]).as_array().unwrap().clone()
    }
}

/// Poll `done` every 50 ms until it holds; panics with `what` after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "gave up waiting ({limit:?}) for {what}"
        );
        sleep(Duration::from_millis(50));
    }
}

/// A running `sluice jobs work`, its output going to files.
#[derive(Debug)]
pub struct Worker {
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// How a worker ended.
#[derive(Debug)]
pub struct Ended {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ended {
    /// The report it printed (`WorkerReport` as JSON).
    pub fn report(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("{e}: {:?} / {}", self.stdout, self.stderr))
    }
}

impl Worker {
    /// `sluice jobs work <target flags> ARGS`; its output goes to files in `dir`.
    pub fn start(target: &Target, args: &[&str], dir: &Path) -> Self {
        let n = fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        let stdout = dir.join(format!("worker-{n}.out"));
        let stderr = dir.join(format!("worker-{n}.err"));
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["jobs", "work"])
            .args(target.flags())
            .args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).unwrap())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut worker = Self {
            child: Some(child),
            stdout,
            stderr,
        };
        // Started: it says so on stderr once its signal handlers are in place (or it ended).
        let start = Instant::now();
        while !worker.stderr_text().contains(" started") {
            if let Some(child) = worker.child.as_mut() {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the worker did not start"
            );
            sleep(Duration::from_millis(20));
        }
        worker
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Send `signal`, then wait (at most `limit`) for the process to end.
    pub fn stop(mut self, signal: Signal, limit: Duration) -> Ended {
        let pid = Pid::from_raw(self.pid() as i32);
        kill(pid, signal).unwrap();
        self.wait(limit)
    }

    /// Wait (at most `limit`) for the process to end by itself.
    pub fn wait(&mut self, limit: Duration) -> Ended {
        let mut child = self.child.take().unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the worker did not end within {limit:?}: {}",
                    fs::read_to_string(&self.stderr).unwrap_or_default()
                );
            }
            sleep(Duration::from_millis(20));
        };
        Ended {
            code: status.code(),
            stdout: fs::read_to_string(&self.stdout).unwrap_or_default(),
            stderr: fs::read_to_string(&self.stderr).unwrap_or_default(),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Write an executable `sh` script `name` into `dir`; its path.
pub fn script(dir: &Path, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path.to_str().unwrap().to_owned()
}

/// The files of `dir` whose names start with `prefix`, name -> contents.
pub fn files(dir: &Path, prefix: &str) -> BTreeMap<String, String> {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with(prefix) || name.ends_with(".tmp") {
                return None;
            }
            Some((name, fs::read_to_string(e.path()).ok()?))
        })
        .collect()
}

/// What a failed run said on stderr, for assertion messages.
pub fn said(out: &std::process::Output) -> String {
    stderr(out)
}
