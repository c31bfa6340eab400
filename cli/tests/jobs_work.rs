//! `sluice jobs work --exec` with the real binary against real Redis (standalone and Cluster):
//! every job handled once with its environment and stdin (an oracle over the handler's own
//! records), exit 65 dead-letters with the stderr tail, exit 75 retries, a hanging command is
//! killed with its process group, a command that can't start is a start-up error.
#![allow(clippy::unwrap_used)]

mod support;

use std::{collections::BTreeSet, path::Path, time::Duration};

use nix::sys::signal::Signal;
use support::{
    sluice,
    worker::{Target, Worker, files, said, script, wait_for},
};

/// The test handler. It records each run in `run.<id>.<attempt>.<pid>` (id, attempt, topic,
/// group, then stdin), and behaves as the payload says: `"do":"data"` writes 60 lines of noise
/// and then the payload to stderr and exits 65; `"do":"temp"` exits 75 on attempts 1 and 2;
/// `"do":"always75"` always exits 75; `"do":"hang"` starts a `sleep 30` child (its pid in
/// `hang.<attempt>.pid`) and waits for it.
fn handler(dir: &Path) -> String {
    let out = dir.display();
    script(
        dir,
        "handler.sh",
        &format!(
            r#"p=$(cat)
f="{out}/run.$SLUICE_JOB_ID.$SLUICE_JOB_ATTEMPT.$$"
printf '%s\n%s\n%s\n%s\n%s\n' "$SLUICE_JOB_ID" "$SLUICE_JOB_ATTEMPT" "$SLUICE_TOPIC" "$SLUICE_GROUP" "$p" > "$f.tmp"
mv "$f.tmp" "$f"
case "$p" in
  *'"do":"data"'*)
    i=0; while [ $i -lt 60 ]; do echo "noise line $i ......................................" >&2; i=$((i+1)); done
    echo "bad record: $p" >&2
    exit 65 ;;
  *'"do":"temp"'*) [ "$SLUICE_JOB_ATTEMPT" -lt 3 ] && exit 75 ;;
  *'"do":"always75"'*) echo "try later" >&2; exit 75 ;;
  *'"do":"hang"'*)
    sleep 30 &
    echo $! > "{out}/hang.$SLUICE_JOB_ATTEMPT.pid"
    wait ;;
esac
exit 0
"#
        ),
    )
}

/// One handler run, as the handler recorded it.
#[derive(Debug)]
struct Run {
    id: String,
    attempt: u32,
    topic: String,
    group: String,
    payload: String,
}

fn runs(dir: &Path) -> Vec<Run> {
    files(dir, "run.")
        .into_values()
        .map(|text| {
            let mut lines = text.lines();
            let mut next = || lines.next().unwrap_or_default().to_owned();
            Run {
                id: next(),
                attempt: next().parse().unwrap(),
                topic: next(),
                group: next(),
                payload: next(),
            }
        })
        .collect()
}

fn args<'a>(exec: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--exec", exec];
    args.extend_from_slice(extra);
    args
}

/// Whether process `pid` still runs (a zombie waiting for its reaper does not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

sluice_tests::topology_test! {
    #[test]
    fn exec_handles_every_job_once_with_its_environment_and_stdin(name, spec) {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::new(spec, "work-exec-ok");
        let payloads: Vec<String> = (0..40).map(|n| format!(r#"{{"n":{n},"text":"a b"}}"#)).collect();
        target.enqueue(&payloads);
        let exec = handler(dir.path());
        let worker = Worker::start(&target, &args(&exec, &["--group", "g", "--concurrency", "4"]), dir.path());
        wait_for(Duration::from_secs(30), "40 runs", || runs(dir.path()).len() >= 40);
        wait_for(Duration::from_secs(10), "acknowledgements", || target.drained("g"));
        let ended = worker.stop(Signal::SIGTERM, Duration::from_secs(10));
        assert_eq!(ended.code, Some(0), "{name}: {ended:?}");
        let report = ended.report();
        assert_eq!(report["completed"], 40, "{name}: {report}");
        assert_eq!(report["dead_lettered"], 0, "{name}: {report}");

        // The oracle: each payload ran exactly once, first attempt, with its own id and the
        // topic and group in its environment; stdin was the payload byte for byte.
        let runs = runs(dir.path());
        assert_eq!(runs.len(), 40, "{name}: {runs:?}");
        let seen: BTreeSet<&str> = runs.iter().map(|r| r.payload.as_str()).collect();
        let expected: BTreeSet<&str> = payloads.iter().map(String::as_str).collect();
        assert_eq!(seen, expected, "{name}");
        let ids: BTreeSet<&str> = runs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids.len(), 40, "{name}: job ids are not distinct");
        for run in &runs {
            assert_eq!((run.attempt, run.topic.as_str(), run.group.as_str()), (1, "t", "g"), "{name}: {run:?}");
            assert_eq!(run.id.len(), 32, "{name}: {run:?}");
        }
        assert!(target.dead_letters().is_empty(), "{name}");
    }

    #[test]
    fn exit_65_dead_letters_at_once_with_the_stderr_tail(name, spec) {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::new(spec, "work-exec-65");
        let payloads: Vec<String> = (0..6)
            .map(|n| if n % 2 == 0 { format!(r#"{{"n":{n},"do":"data"}}"#) } else { format!(r#"{{"n":{n}}}"#) })
            .collect();
        target.enqueue(&payloads);
        let exec = handler(dir.path());
        let worker = Worker::start(&target, &args(&exec, &["--group", "g", "--concurrency", "2"]), dir.path());
        wait_for(Duration::from_secs(30), "the 3 dead letters", || target.dead_letters().len() >= 3);
        wait_for(Duration::from_secs(10), "the queue to drain", || target.drained("g"));
        let ended = worker.stop(Signal::SIGTERM, Duration::from_secs(10));
        assert_eq!(ended.code, Some(0), "{name}: {ended:?}");
        let report = ended.report();
        assert_eq!((report["completed"].as_u64(), report["dead_lettered"].as_u64()), (Some(3), Some(3)), "{name}: {report}");
        assert_eq!(report["retried"], 0, "{name}: {report}");

        let letters = target.dead_letters();
        assert_eq!(letters.len(), 3, "{name}: {letters:?}");
        for letter in &letters {
            let payload = letter["payload"].as_str().unwrap();
            assert!(payload.contains(r#""do":"data""#), "{name}: {letter}");
            assert_eq!(letter["reason"], "fatal", "{name}: {letter}");
            assert_eq!(letter["attempts"], 1, "{name}: {letter}");
            assert_eq!(letter["group"], "g", "{name}: {letter}");
            // The tail of stderr: its last line (the payload), not its first (cut off).
            let error = letter["error"].as_str().unwrap();
            assert!(error.starts_with("exit status 65 (EX_DATAERR): "), "{name}: {error}");
            assert!(error.ends_with(&format!("bad record: {payload}")), "{name}: {error}");
            assert!(!error.contains("noise line 0 "), "{name}: {error}");
            assert!(error.len() <= 2100, "{name}: {} bytes", error.len());
        }
        // Each ran once; the worker went on with the others.
        assert_eq!(runs(dir.path()).len(), 6, "{name}");
    }

    #[test]
    fn exit_75_retries_with_backoff_until_it_succeeds_or_attempts_run_out(name, spec) {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::new(spec, "work-exec-75");
        target.enqueue(&[r#"{"do":"temp"}"#.to_owned(), r#"{"do":"always75"}"#.to_owned()]);
        let exec = handler(dir.path());
        let worker = Worker::start(
            &target,
            &args(&exec, &["--group", "g", "--concurrency", "2", "--max-attempts", "4", "--retry-base-delay", "20ms", "--retry-max-delay", "100ms"]),
            dir.path(),
        );
        wait_for(Duration::from_secs(30), "the dead letter", || !target.dead_letters().is_empty());
        wait_for(Duration::from_secs(10), "the queue to drain", || target.drained("g"));
        let ended = worker.stop(Signal::SIGTERM, Duration::from_secs(10));
        assert_eq!(ended.code, Some(0), "{name}: {ended:?}");
        let report = ended.report();
        // temp: attempts 1, 2 fail, 3 succeeds; always75: 1..4 fail, the 4th dead-letters.
        assert_eq!(report["completed"], 1, "{name}: {report}");
        assert_eq!(report["retried"], 2 + 3, "{name}: {report}");
        assert_eq!(report["dead_lettered"], 1, "{name}: {report}");
        let mut attempts: Vec<(String, u32)> =
            runs(dir.path()).into_iter().map(|r| (r.payload, r.attempt)).collect();
        attempts.sort();
        let expected: Vec<(String, u32)> = [(r#"{"do":"always75"}"#, 1..=4), (r#"{"do":"temp"}"#, 1..=3)]
            .into_iter()
            .flat_map(|(p, range)| range.map(move |a| (p.to_owned(), a)))
            .collect();
        assert_eq!(attempts, expected, "{name}");
        let letters = target.dead_letters();
        assert_eq!(letters[0]["reason"], "exhausted", "{name}: {letters:?}");
        assert_eq!(letters[0]["attempts"], 4, "{name}: {letters:?}");
        assert_eq!(letters[0]["error"], "exit status 75 (EX_TEMPFAIL): try later", "{name}");
    }

    #[test]
    fn a_job_past_the_job_timeout_has_its_process_group_killed(name, spec) {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::new(spec, "work-exec-hang");
        target.enqueue(&[r#"{"do":"hang"}"#.to_owned(), r#"{"n":1}"#.to_owned()]);
        let exec = handler(dir.path());
        let worker = Worker::start(
            &target,
            &args(&exec, &["--group", "g", "--concurrency", "2", "--job-timeout", "1s", "--visibility-timeout", "5s", "--max-attempts", "2", "--retry-base-delay", "20ms"]),
            dir.path(),
        );
        wait_for(Duration::from_secs(30), "the dead letter", || !target.dead_letters().is_empty());
        wait_for(Duration::from_secs(10), "the queue to drain", || target.drained("g"));
        let ended = worker.stop(Signal::SIGTERM, Duration::from_secs(10));
        assert_eq!(ended.code, Some(0), "{name}: {ended:?}");
        let report = ended.report();
        assert_eq!(report["completed"], 1, "{name}: {report}");
        assert_eq!(report["retried"], 1, "{name}: {report}");
        assert_eq!(report["dead_lettered"], 1, "{name}: {report}");
        let letters = target.dead_letters();
        assert_eq!(letters[0]["reason"], "exhausted", "{name}: {letters:?}");
        assert_eq!(letters[0]["attempts"], 2, "{name}: {letters:?}");
        let error = letters[0]["error"].as_str().unwrap();
        assert!(error.starts_with("timed out after 1s (--job-timeout); process group killed"), "{name}: {error}");
        // The command's own child (`sleep 30`, same process group) died with it, each attempt.
        let pids = files(dir.path(), "hang.");
        assert_eq!(pids.len(), 2, "{name}: {pids:?}");
        for pid in pids.values() {
            let pid: u32 = pid.trim().parse().unwrap();
            wait_for(Duration::from_secs(5), "the killed group's child to be gone", || !alive(pid));
        }
    }
}

sluice_tests::topology_test! {
    #[test]
    fn a_malformed_job_is_dead_lettered_and_the_worker_runs_on(name, spec) {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::new(spec, "work-exec-malformed");
        // Written behind the producer's back: valid metadata, a payload that is not JSON.
        let key = sluice_shared::Keyspace::new(target.prefix.clone()).unwrap().key(b"t", &["stream"]);
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
            let config = sluice_shared::RedisConfig::parse(spec).unwrap();
            let mut conn = sluice_shared::RedisHandle::connect(&config).await.unwrap();
            let _: String = redis::cmd("XADD")
                .arg(&key)
                .arg("*")
                .arg("meta")
                .arg(r#"{"id":"0123456789abcdef0123456789abcdef","attempts":0,"enqueued_at_ms":1}"#)
                .arg("payload")
                .arg("{not json")
                .query_async(&mut conn)
                .await
                .unwrap();
        });
        target.enqueue(&[r#"{"n":1}"#.to_owned()]);
        let exec = handler(dir.path());
        let worker = Worker::start(&target, &args(&exec, &["--group", "g"]), dir.path());
        wait_for(Duration::from_secs(30), "the good job", || !runs(dir.path()).is_empty());
        wait_for(Duration::from_secs(10), "the queue to drain", || target.drained("g"));
        let ended = worker.stop(Signal::SIGTERM, Duration::from_secs(10));
        assert_eq!(ended.code, Some(0), "{name}: {ended:?}");
        let report = ended.report();
        assert_eq!((report["completed"].as_u64(), report["dead_lettered"].as_u64()), (Some(1), Some(1)), "{name}: {report}");
        let letters = target.dead_letters();
        assert_eq!(letters.len(), 1, "{name}: {letters:?}");
        assert_eq!(letters[0]["reason"], "decode", "{name}: {letters:?}");
        assert_eq!(letters[0]["payload"], "{not json", "{name}: {letters:?}");
        assert!(letters[0]["error"].as_str().unwrap().contains("payload does not decode"), "{name}: {letters:?}");
        // The handler never saw it.
        assert_eq!(runs(dir.path()).len(), 1, "{name}");
    }
}

#[test]
fn a_command_that_cannot_start_is_a_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.sh");
    std::fs::write(&plain, "#!/bin/sh\nexit 0\n").unwrap();
    let plain = plain.to_str().unwrap();
    // Port 1: nothing listens there. Every case fails on its flags first, before connecting.
    let base = [
        "jobs",
        "work",
        "--redis",
        "redis://127.0.0.1:1",
        "--topic",
        "t",
        "--group",
        "g",
    ];
    let cases: [(&[&str], &str); 8] = [
        (
            &["--exec", "/nonexistent/handler"],
            "--exec: cannot run /nonexistent/handler",
        ),
        (
            &["--exec", "no-such-program-sluice-test --flag"],
            "--exec: cannot run no-such-program-sluice-test: no executable of that name on PATH",
        ),
        (&["--exec", plain], "not executable"),
        (&["--exec", "/tmp"], "not a file"),
        (
            &["--exec", "sh -c 'unbalanced"],
            "--exec: unbalanced quotes",
        ),
        (&["--exec", "  "], "--exec: no command given"),
        (
            &["--http", "https://127.0.0.1:9/x"],
            "--http: https:// is not supported",
        ),
        (
            &[
                "--exec",
                "true",
                "--job-timeout",
                "30s",
                "--visibility-timeout",
                "10s",
            ],
            "--job-timeout (30s) must be shorter than --visibility-timeout (10s)",
        ),
    ];
    for (extra, expected) in cases {
        let out = sluice(&[&base[..], extra].concat());
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {out:?}");
        let err = said(&out);
        assert!(err.contains(expected), "{extra:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("redis"),
            "{extra:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "{extra:?}: {out:?}");
    }
    // Neither or both handlers: a usage error (clap's exit status 2).
    for extra in [
        &[][..],
        &["--exec", "true", "--http", "http://127.0.0.1:9/"][..],
    ] {
        let out = sluice(&[&base[..], extra].concat());
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {out:?}");
    }
}
