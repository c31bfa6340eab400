//! `sluice jobs enqueue --lines FILE|-`: newline-delimited JSON, one job a line, enqueued in
//! pipelined batches (one round trip per `--batch` jobs).
//!
//! A line that is not one JSON document (or not UTF-8, or over `--max-payload-bytes`) is
//! rejected with its line number and the reason; the good lines around it are still enqueued.
//! Blank lines are skipped. The summary on stdout is
//! `{"enqueued": N, "rejected": [{"line": L, "reason": "..."}]}`; exit status 0 when every
//! line was enqueued, 1 when some were rejected. If Redis fails mid-way the summary also says
//! `"error"` and `"unconfirmed_lines"` (the first and last line of the batch in flight, which
//! may or may not have been written), and the exit status is 2: resume after the last
//! confirmed line.

use std::path::Path;

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

use super::{Access, EnqueueArgs, connect, enqueue::retry_policy, topic};
use crate::Failure;

/// One rejected line.
#[derive(Debug, Serialize)]
struct Rejected {
    line: u64,
    reason: String,
}

/// What `--lines` prints.
#[derive(Debug, Default, Serialize)]
struct Summary {
    enqueued: u64,
    rejected: Vec<Rejected>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unconfirmed_lines: Option<[u64; 2]>,
}

async fn open(path: &Path) -> Result<Box<dyn AsyncBufRead + Unpin + Send>, Failure> {
    if path == Path::new("-") {
        return Ok(Box::new(BufReader::new(tokio::io::stdin())));
    }
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Failure::new(format!("--lines: cannot open {}: {e}", path.display())))?;
    Ok(Box::new(BufReader::new(file)))
}

/// A line's payload, or why it is rejected.
fn parse_line(bytes: &[u8], max_payload_bytes: usize) -> Result<Option<Box<RawValue>>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if text.len() > max_payload_bytes {
        return Err(format!(
            "payload of {} bytes is over --max-payload-bytes {max_payload_bytes}",
            text.len()
        ));
    }
    serde_json::from_str::<Box<RawValue>>(text)
        .map(Some)
        .map_err(|e| format!("not valid JSON: {e}"))
}

pub(super) async fn run(args: EnqueueArgs) -> Result<i32, Failure> {
    let Some(path) = args.lines.clone() else {
        return Err(Failure::new("--lines: missing"));
    };
    let topic = topic(&args.target)?
        .set_max_payload_bytes(args.max_payload_bytes)
        .map_err(|e| Failure::new(format!("--max-payload-bytes: {}", e.reason())))?;
    let policy = retry_policy(args.max_attempts)?;
    let options = match policy {
        Some(policy) => sluice_dispatcher::EnqueueOptions::new().retry(policy),
        None => sluice_dispatcher::EnqueueOptions::new(),
    };
    let mut input = open(&path).await?;
    let d = connect(&args.target, Access::Write).await?;
    let producer = d.producer::<Box<RawValue>>(&topic);
    let batch_size = usize::from(args.batch);

    let mut summary = Summary::default();
    let mut batch: Vec<(u64, Box<RawValue>)> = Vec::with_capacity(batch_size);
    let mut buf = Vec::new();
    let mut number = 0u64;
    loop {
        buf.clear();
        let read = input
            .read_until(b'\n', &mut buf)
            .await
            .map_err(|e| Failure::new(format!("--lines: cannot read line {}: {e}", number + 1)))?;
        let done = read == 0;
        if !done {
            number += 1;
            match parse_line(&buf, args.max_payload_bytes) {
                Ok(Some(payload)) => batch.push((number, payload)),
                Ok(None) => {}
                Err(reason) => summary.rejected.push(Rejected {
                    line: number,
                    reason,
                }),
            }
        }
        if !batch.is_empty() && (done || batch.len() >= batch_size) {
            let jobs = batch.iter().map(|(_, p)| (p, options.clone()));
            match producer.enqueue_batch_with(jobs).await {
                Ok(written) => summary.enqueued += written.len() as u64,
                Err(e) => {
                    let first = batch.first().map_or(number, |(n, _)| *n);
                    let last = batch.last().map_or(number, |(n, _)| *n);
                    summary.error = Some(e.to_string());
                    summary.unconfirmed_lines = Some([first, last]);
                    crate::output::json(&summary)?;
                    return Err(Failure::new(format!(
                        "redis failed at lines {first}-{last} (maybe written); \
                         lines before {first} are enqueued: {e}"
                    )));
                }
            }
            batch.clear();
        }
        if done {
            break;
        }
    }
    crate::output::json(&summary)?;
    Ok(if summary.rejected.is_empty() { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lines_are_parsed_or_rejected_with_a_reason() {
        assert_eq!(
            parse_line(b"{\"a\":1}\n", 100).unwrap().unwrap().get(),
            "{\"a\":1}"
        );
        assert!(parse_line(b"  \r\n", 100).unwrap().is_none());
        assert!(parse_line(b"{\"a\":", 100).unwrap_err().contains("JSON"));
        assert!(parse_line(b"{} {}", 100).unwrap_err().contains("JSON"));
        assert!(parse_line(b"\xff\n", 100).unwrap_err().contains("UTF-8"));
        assert!(
            parse_line(b"\"0123456789\"", 5)
                .unwrap_err()
                .contains("--max-payload-bytes")
        );
    }
}
