//! `sluice jobs work` and signals, with the real binary on real Redis (standalone and
//! Cluster): SIGTERM drains the running jobs and exits 0; `kill -9` loses nothing, a second
//! worker reclaims what the first had taken (the oracle: every payload ran to the end, the
//! group has nothing pending or unread, no dead letters).
#![allow(clippy::unwrap_used)]

mod support;

use std::{collections::BTreeSet, path::Path, time::Duration};

use nix::sys::signal::Signal;
use support::worker::{Target, Worker, files, script, wait_for};

/// Records `started.<payload n>.<pid>` when it begins, sleeps `secs`, then records
/// `done.<n>.<pid>`; the payload is `{"n":N}`.
fn slow_handler(dir: &Path, secs: &str) -> String {
    let out = dir.display();
    script(
        dir,
        "slow.sh",
        &format!(
            r#"p=$(cat)
n=$(printf '%s' "$p" | tr -dc '0-9')
: > "{out}/started.$n.$$"
sleep {secs}
printf '%s' "$p" > "{out}/done.$n.$$.tmp"
mv "{out}/done.$n.$$.tmp" "{out}/done.$n.$$"
"#
        ),
    )
}

/// The payload numbers with a `done` record. A command the killed worker had started but
/// not yet fed (it died first) reads an empty stdin and records no number: its job is still
/// pending and is reclaimed, so such records are skipped.
fn done(dir: &Path) -> BTreeSet<u32> {
    files(dir, "done.")
        .keys()
        .filter_map(|name| name.split('.').nth(1)?.parse().ok())
        .collect()
}

/// Whether process `pid` still runs (a zombie waiting for its reaper does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

sluice_tests::topology_test! {
    #[test]
    fn sigterm_drains_the_running_jobs_and_exits_0(name, spec) {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::new(spec, "work-sigterm");
        let payloads: Vec<String> = (0..3).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
        target.enqueue(&payloads);
        let exec = slow_handler(dir.path(), "1");
        let worker = Worker::start(
            &target,
            &["--exec", &exec, "--group", "g", "--concurrency", "2", "--drain-timeout", "20s"],
            dir.path(),
        );
        wait_for(Duration::from_secs(20), "two jobs to start", || files(dir.path(), "started.").len() >= 2);
        // Mid-job: both running jobs finish, the third is not started.
        let ended = worker.stop(Signal::SIGTERM, Duration::from_secs(15));
        assert_eq!(ended.code, Some(0), "{name}: {ended:?}");
        assert!(ended.stderr.contains("SIGTERM: no new jobs"), "{name}: {}", ended.stderr);
        let report = ended.report();
        assert_eq!(report["completed"], 2, "{name}: {report}");
        assert_eq!(report["abandoned"], 0, "{name}: {report}");
        assert_eq!(done(dir.path()).len(), 2, "{name}");
        assert_eq!(files(dir.path(), "started.").len(), 2, "{name}: a job started after SIGTERM");
        let g = target.group_stats("g").unwrap();
        assert_eq!(g["pending"], 0, "{name}: {g}");
        // The third is still there for the next worker.
        let exec = slow_handler(dir.path(), "0");
        let worker = Worker::start(&target, &["--exec", &exec, "--group", "g"], dir.path());
        wait_for(Duration::from_secs(20), "the third job", || done(dir.path()).len() == 3);
        wait_for(Duration::from_secs(10), "the queue to drain", || target.drained("g"));
        let ended = worker.stop(Signal::SIGINT, Duration::from_secs(10));
        assert_eq!(ended.code, Some(0), "{name}: {ended:?}");
        assert_eq!(ended.report()["completed"], 1, "{name}");
    }

    #[test]
    fn kill_9_loses_nothing_a_second_worker_reclaims(name, spec) {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::new(spec, "work-kill9");
        let payloads: Vec<String> = (0..24).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
        target.enqueue(&payloads);
        let exec = slow_handler(dir.path(), "0.2");
        let flags = ["--exec", &exec, "--group", "g", "--concurrency", "4", "--visibility-timeout", "1s", "--job-timeout", "800ms"];
        let first = Worker::start(&target, &flags, dir.path());
        wait_for(Duration::from_secs(20), "a few jobs done", || done(dir.path()).len() >= 4);
        let ended = first.stop(Signal::SIGKILL, Duration::from_secs(5));
        assert_eq!(ended.code, None, "{name}: {ended:?}");
        // What the first worker had read but not acknowledged is pending under its name.
        let pending = target.group_stats("g").unwrap()["pending"].as_u64().unwrap();
        assert!(pending > 0, "{name}: nothing pending after kill -9");

        let second = Worker::start(&target, &flags, dir.path());
        wait_for(Duration::from_secs(30), "every job done", || done(dir.path()).len() == 24);
        wait_for(Duration::from_secs(15), "the queue to drain", || target.drained("g"));
        let ended = second.stop(Signal::SIGTERM, Duration::from_secs(10));
        assert_eq!(ended.code, Some(0), "{name}: {ended:?}");
        let report = ended.report();
        assert!(report["reclaimed"].as_u64().unwrap() >= 1, "{name}: {report}");
        assert_eq!(report["dead_lettered"], 0, "{name}: {report}");
        assert_eq!(done(dir.path()), (0..24).collect::<BTreeSet<u32>>(), "{name}");
        assert!(target.dead_letters().is_empty(), "{name}");
    }

    #[test]
    fn a_second_signal_stops_at_once_and_the_job_stays_pending(name, spec) {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::new(spec, "work-sigterm-twice");
        target.enqueue(&[r#"{"n":1}"#.to_owned()]);
        let exec = slow_handler(dir.path(), "30");
        let worker = Worker::start(
            &target,
            &["--exec", &exec, "--group", "g", "--job-timeout", "40s", "--visibility-timeout", "60s"],
            dir.path(),
        );
        wait_for(Duration::from_secs(20), "the job to start", || !files(dir.path(), "started.").is_empty());
        let pid: u32 = files(dir.path(), "started.").keys().next().unwrap().rsplit('.').next().unwrap().parse().unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(worker.pid() as i32), Signal::SIGTERM).unwrap();
        wait_for(Duration::from_secs(5), "the drain to begin", || worker.stderr_text().contains("draining"));
        let started = std::time::Instant::now();
        let ended = worker.stop(Signal::SIGTERM, Duration::from_secs(10));
        assert!(started.elapsed() < Duration::from_secs(5), "{name}: {:?}", started.elapsed());
        assert_eq!(ended.code, Some(2), "{name}: {ended:?}");
        assert!(ended.stderr.contains("stopped by a second signal"), "{name}: {}", ended.stderr);
        // The command (and its sleep) was killed; the job is still pending, for reclaim.
        wait_for(Duration::from_secs(5), "the command to be killed", || !alive(pid));
        assert!(done(dir.path()).is_empty(), "{name}");
        assert_eq!(target.group_stats("g").unwrap()["pending"], 1, "{name}");
    }
}
