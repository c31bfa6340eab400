//! The dashboard in headless Chromium (Debian's `chromium`, driven over the DevTools protocol):
//! the overview shows the numbers Redis holds while workers run; replaying a dead letter from
//! the page gets it processed; pausing a group from the page makes its lag grow and resuming
//! drains it; a job is found by id; an action on a dead letter that is gone shows a clear error
//! and changes nothing. A screenshot of each page goes to `target/dashboard-screenshots/`.
//! Oracle: every job is processed exactly once, none while its group is paused.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use sluice_dashboard::DashboardConfig;
use sluice_dispatcher::{EnqueueOptions, Enqueued, Job, JobError, TopicConfig};
use support::{Running, cdp::Browser, dispatcher, eventually, fast_worker};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    n: u32,
    bad: bool,
}

type Done = Arc<Mutex<HashMap<u32, u32>>>;

fn done_count(done: &Done) -> usize {
    done.lock().unwrap().len()
}

fn shots() -> PathBuf {
    sluice_tests::workspace_root()
        .join("target")
        .join("dashboard-screenshots")
}

/// A JS expression: the text of one cell of the groups table.
fn cell(topic: &str, group: &str, key: &str) -> String {
    format!(
        "(document.querySelector('td[data-topic=\"{topic}\"][data-group=\"{group}\"][data-k=\"{key}\"]') || {{}}).textContent"
    )
}

async fn text(b: &mut Browser, expr: &str) -> String {
    b.eval(expr).await.as_str().unwrap_or("").to_owned()
}

sluice_tests::topology_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pages_show_redis_and_their_actions_work_in_chromium(name, spec) {
        let d = dispatcher(spec, "dash-browser").await;
        let topic = TopicConfig::new("orders").unwrap();
        let producer = d.producer::<Order>(&topic);
        let done: Done = Arc::default();
        // Bad orders fail for good until the fix is "deployed".
        let fixed = Arc::new(AtomicBool::new(false));
        let worker = {
            let (done, fixed) = (done.clone(), fixed.clone());
            d.worker(&topic, fast_worker("billing").set_consumer("billing-1").unwrap(), move |job: Job<Order>| {
                let (done, fixed) = (done.clone(), fixed.clone());
                async move {
                    if job.payload().bad && !fixed.load(Ordering::SeqCst) {
                        return Err(JobError::fatal("card declined"));
                    }
                    *done.lock().unwrap().entry(job.payload().n).or_default() += 1;
                    Ok(())
                }
            })
        };
        worker.ensure_group().await.unwrap();
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(worker.run(shutdown.clone()));
        for n in 0..20 {
            producer.enqueue(&Order { n, bad: false }).await.unwrap();
        }
        producer.enqueue(&Order { n: 100, bad: true }).await.unwrap();
        assert!(eventually(Duration::from_secs(20), || async {
            done_count(&done) == 20 && d.stats("orders").await.unwrap().dead_letters == 1
        }).await, "{name}");

        let dash = Running::start(&d, DashboardConfig::new()).await;
        let mut b = Browser::start().await;
        b.goto(&dash.url("/")).await;

        // Overview: the numbers Redis holds.
        let settled = format!(
            "{} === '1' && {} === '0' && {} === '0'",
            cell("orders", "billing", "dead_letters"),
            cell("orders", "billing", "lag"),
            cell("orders", "billing", "pending"),
        );
        assert!(b.wait_for(&settled, Duration::from_secs(20)).await, "{name}: overview never settled");
        // Depth changes as the worker trims the stream (every second): poll until the page and
        // a fresh read of Redis agree on every number.
        let mut last = String::new();
        let mut agreed = false;
        for _ in 0..50 {
            let stats = d.stats("orders").await.unwrap();
            let row = stats.group("billing").unwrap();
            let want: Vec<String> = [
                row.stream_length,
                row.lag.unwrap(),
                row.pending,
                row.delayed,
                row.dead_letters,
            ]
            .iter()
            .map(u64::to_string)
            .collect();
            let mut shown = Vec::new();
            for key in ["depth", "lag", "pending", "delayed", "dead_letters"] {
                shown.push(text(&mut b, &cell("orders", "billing", key)).await);
            }
            if shown == want {
                agreed = true;
                break;
            }
            last = format!("page {shown:?}, redis {want:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(agreed, "{name}: {last}");
        assert!(text(&mut b, &cell("orders", "billing", "consumers")).await.contains("billing-1"), "{name}");
        let processed: u64 = d.history("orders", 60).await.unwrap().processed.iter().sum();
        assert_eq!(processed, 20, "{name}");
        assert!(b.wait_for(
            "(document.querySelector('[data-chart=\"last hour\"] .legend .p') || {}).textContent === 'processed 20'",
            Duration::from_secs(10),
        ).await, "{name}: the hour chart does not show 20 processed");
        assert!(b.wait_for(
            "(document.querySelector('[data-chart=\"last hour\"] .legend .f') || {}).textContent === 'failed 1'",
            Duration::from_secs(10),
        ).await, "{name}");
        b.screenshot(&shots().join(format!("overview-{name}.png"))).await;

        // Topic page: the dead letter, with payload, error, reason and attempts.
        b.goto(&dash.url("/#/topic/orders")).await;
        assert!(b.wait_for("document.querySelectorAll('tr[data-dead]').length === 1", Duration::from_secs(10)).await, "{name}");
        let row_text = text(&mut b, "document.querySelector('tr[data-dead]').textContent").await;
        for part in ["card declined", "fatal", r#"{"n":100,"bad":true}"#] {
            assert!(row_text.contains(part), "{name}: {part} not in {row_text}");
        }
        b.screenshot(&shots().join(format!("topic-{name}.png"))).await;

        // Replay it from the page, after the fix: it gets processed.
        fixed.store(true, Ordering::SeqCst);
        b.eval("document.querySelector('button[data-action=\"replay\"]').click()").await;
        assert!(b.wait_for("document.getElementById('flash').textContent.startsWith('Replayed dead letter')", Duration::from_secs(10)).await, "{name}");
        assert!(eventually(Duration::from_secs(20), || async {
            done.lock().unwrap().contains_key(&100)
        }).await, "{name}: the replayed job was not processed");
        assert!(b.wait_for(&format!("{} === '0'", cell("orders", "billing", "dead_letters")), Duration::from_secs(10)).await, "{name}");
        assert_eq!(d.stats("orders").await.unwrap().dead_letters, 0, "{name}");

        // An action on a dead letter that is gone: a clear message, nothing changed.
        b.eval("(() => { const x = document.createElement('button'); x.dataset.action = 'delete'; \
                x.dataset.topic = 'orders'; x.dataset.id = '1-1'; document.body.appendChild(x); x.click(); x.remove(); })()").await;
        assert!(b.wait_for("document.getElementById('flash').dataset.kind === 'error' && \
                document.getElementById('flash').textContent.includes('nothing was changed')", Duration::from_secs(10)).await, "{name}");

        // Pause from the page: the lag grows, nothing is processed.
        b.eval("document.querySelector('button[data-action=\"pause\"][data-group=\"billing\"]').click()").await;
        assert!(b.wait_for(&format!("{} === 'paused'", cell("orders", "billing", "status")), Duration::from_secs(10)).await, "{name}");
        assert!(d.is_paused("orders", "billing").await.unwrap(), "{name}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = done_count(&done);
        for n in 200..230 {
            producer.enqueue(&Order { n, bad: false }).await.unwrap();
        }
        assert!(b.wait_for(&format!("{} === '30'", cell("orders", "billing", "lag")), Duration::from_secs(10)).await,
            "{name}: lag shown {}", text(&mut b, &cell("orders", "billing", "lag")).await);
        assert_eq!(d.stats("orders").await.unwrap().group("billing").unwrap().lag, Some(30), "{name}");
        assert_eq!(done_count(&done), before, "{name}: processed while paused");
        b.screenshot(&shots().join(format!("topic-paused-{name}.png"))).await;

        // Resume from the page: it drains.
        b.eval("document.querySelector('button[data-action=\"resume\"][data-group=\"billing\"]').click()").await;
        assert!(b.wait_for(&format!("{} === '0' && {} === 'running'", cell("orders", "billing", "lag"), cell("orders", "billing", "status")), Duration::from_secs(20)).await, "{name}");
        assert!(eventually(Duration::from_secs(20), || async { done_count(&done) == 51 }).await, "{name}");

        // Job lookup: a delayed job is found as delayed.
        let Enqueued::Delayed { job_id, .. } = producer
            .enqueue_with(&Order { n: 300, bad: false }, EnqueueOptions::new().delay(Duration::from_secs(3600)))
            .await
            .unwrap()
        else {
            panic!("{name}: not delayed");
        };
        b.goto(&dash.url(&format!("/#/job/orders/{job_id}"))).await;
        assert!(b.wait_for("(document.getElementById('lookup-result') || {dataset: {}}).dataset.state === 'delayed'", Duration::from_secs(10)).await, "{name}");
        b.screenshot(&shots().join(format!("job-{name}.png"))).await;

        drop(b);
        dash.stop().await;
        shutdown.cancel();
        running.await.unwrap().unwrap();
        for (n, times) in done.lock().unwrap().iter() {
            assert_eq!(*times, 1, "{name}: order {n} processed {times} times");
        }
    }
}
