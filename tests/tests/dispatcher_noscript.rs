//! Scripted enqueues (delayed and dedup jobs, alone or in batches) survive `SCRIPT FLUSH`: the
//! producer reloads the script and every job lands exactly once.
#![allow(clippy::unwrap_used)]

mod dispatcher_support;

use std::time::Duration;

use dispatcher_support::*;
use serde::{Deserialize, Serialize};
use sluice_dispatcher::{EnqueueOptions, Enqueued, TopicConfig};

#[derive(Debug, Serialize, Deserialize)]
struct Note {
    n: u32,
}

sluice_tests::topology_test! {
    #[tokio::test]
    async fn scripted_enqueues_reload_after_script_flush(name, spec) {
        let d = dispatcher(spec, "noscript").await;
        let topic = TopicConfig::new("notes").unwrap();
        let producer = d.producer::<Note>(&topic);
        let notes: Vec<Note> = (0..40).map(|n| Note { n }).collect();
        for round in 0..3u32 {
            sluice_tests::flush_scripts(spec);
            // A batch mixing due, delayed and dedup jobs: all of it goes through the script.
            let batch = notes.iter().enumerate().map(|(i, note)| {
                let options = match i % 3 {
                    0 => EnqueueOptions::new(),
                    1 => EnqueueOptions::new().delay(Duration::from_secs(600)),
                    _ => EnqueueOptions::new()
                        .dedup(format!("r{round}-{i}"), Duration::from_secs(60)),
                };
                (note, options)
            });
            let results = producer.enqueue_batch_with(batch).await.unwrap();
            assert_eq!(results.len(), 40, "{name}");
            assert!(
                results
                    .iter()
                    .all(|r| !matches!(r, Enqueued::Duplicate { .. })),
                "{name}: round {round}: {results:?}"
            );
            // A single scripted enqueue after a flush reloads too.
            sluice_tests::flush_scripts(spec);
            let one = producer
                .enqueue_with(
                    &Note { n: 99 },
                    EnqueueOptions::new().delay(Duration::from_secs(600)),
                )
                .await
                .unwrap();
            assert!(matches!(one, Enqueued::Delayed { .. }), "{name}: {one:?}");
        }
        // Each round: 14 due jobs in the stream (i % 3 == 0) plus 13 dedup jobs (due now);
        // 13 delayed jobs + 1 single delayed job in the delayed set. Nothing twice.
        let stats = d.stats("notes").await.unwrap();
        assert_eq!(stats.stream_length, 3 * 27, "{name}: {stats:?}");
        assert_eq!(stats.delayed, 3 * 14, "{name}: {stats:?}");
    }
}
