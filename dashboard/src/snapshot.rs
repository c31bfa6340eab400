//! What every page shows, read from Redis in one pass: [`Snapshot`].

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sluice_dispatcher::{
    DeadLetter, DelayedJob, Dispatcher, GroupDetail, TopicHistory, TopicStats,
};

/// Dead letters each topic carries in a snapshot (the API pages through all of them).
pub const SNAPSHOT_DEAD_LETTERS: usize = 50;
/// Delayed jobs each topic carries in a snapshot.
pub const SNAPSHOT_DELAYED: usize = 10;
/// Payload bytes shown per job in a snapshot.
pub const SNAPSHOT_PAYLOAD_BYTES: usize = 2048;
/// How often the list of topics is read again (it needs a `SCAN`).
const TOPICS_EVERY: Duration = Duration::from_secs(5);
/// How often the 24-hour history is read again.
const DAY_EVERY: Duration = Duration::from_secs(10);

/// Everything the pages show, at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// When it was read, unix ms.
    pub generated_at_ms: u64,
    /// The key prefix.
    pub prefix: String,
    /// Whether actions are refused.
    pub read_only: bool,
    /// Every topic, by name.
    pub topics: Vec<TopicView>,
    /// What failed while reading, if anything (the rest is still shown).
    pub errors: Vec<String>,
}

/// One topic of a [`Snapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct TopicView {
    /// The topic's name.
    pub topic: String,
    /// Depth per group.
    pub stats: TopicStats,
    /// Consumers, queue latency and pause flag per group.
    pub groups: Vec<GroupDetail>,
    /// Processed and failed per minute, last hour.
    pub history_hour: TopicHistory,
    /// Processed and failed per minute, last 24 hours.
    pub history_day: Option<TopicHistory>,
    /// The next delayed jobs (payloads cut to [`SNAPSHOT_PAYLOAD_BYTES`]).
    pub delayed: Vec<DelayedJob>,
    /// The oldest dead letters (payloads cut to [`SNAPSHOT_PAYLOAD_BYTES`]).
    pub dead_letters: Vec<DeadLetter>,
}

/// What the reader keeps between passes: the topic list and the day histories, read less often.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    topics: Vec<String>,
    topics_at: Option<Instant>,
    days: Vec<(String, TopicHistory)>,
    days_at: Option<Instant>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Read everything once. Failures are collected in [`Snapshot::errors`]; a topic whose depth
/// can't be read is left out.
pub(crate) async fn read(dispatcher: &Dispatcher, cache: &mut Cache, read_only: bool) -> Snapshot {
    let mut errors = Vec::new();
    if cache
        .topics_at
        .is_none_or(|at| at.elapsed() >= TOPICS_EVERY)
    {
        match dispatcher.topics().await {
            Ok(topics) => {
                cache.topics = topics;
                cache.topics_at = Some(Instant::now());
            }
            Err(e) => errors.push(format!("listing topics: {e}")),
        }
    }
    let read_days = cache.days_at.is_none_or(|at| at.elapsed() >= DAY_EVERY);
    if read_days {
        cache.days.clear();
        cache.days_at = Some(Instant::now());
    }
    let mut topics = Vec::with_capacity(cache.topics.len());
    let names = cache.topics.clone();
    for topic in &names {
        match read_topic(dispatcher, topic, cache, read_days).await {
            Ok(view) => topics.push(view),
            Err(e) => errors.push(format!("topic {topic}: {e}")),
        }
    }
    Snapshot {
        generated_at_ms: now_ms(),
        prefix: dispatcher.keyspace().prefix().to_owned(),
        read_only,
        topics,
        errors,
    }
}

async fn read_topic(
    dispatcher: &Dispatcher,
    topic: &str,
    cache: &mut Cache,
    read_days: bool,
) -> Result<TopicView, sluice_dispatcher::DispatchError> {
    let stats = dispatcher.stats(topic).await?;
    let groups = dispatcher.group_details(topic).await?;
    let history_hour = dispatcher.history(topic, 60).await?;
    if read_days {
        let day = dispatcher
            .history(topic, sluice_dispatcher::MAX_HISTORY_MINUTES)
            .await?;
        cache.days.push((topic.to_owned(), day));
    }
    let history_day = cache
        .days
        .iter()
        .find(|(t, _)| t == topic)
        .map(|(_, h)| h.clone());
    let mut delayed = dispatcher.delayed_jobs(topic, SNAPSHOT_DELAYED).await?;
    for job in &mut delayed {
        job.payload.truncate(SNAPSHOT_PAYLOAD_BYTES);
    }
    let mut dead_letters = dispatcher
        .dead_letters(topic, None, SNAPSHOT_DEAD_LETTERS)
        .await?;
    for letter in &mut dead_letters {
        letter.payload.truncate(SNAPSHOT_PAYLOAD_BYTES);
    }
    Ok(TopicView {
        topic: topic.to_owned(),
        stats,
        groups,
        history_hour,
        history_day,
        delayed,
        dead_letters,
    })
}
