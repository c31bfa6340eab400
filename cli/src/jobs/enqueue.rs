//! `sluice jobs enqueue --payload JSON|-`: one job, stored byte for byte.

use std::io::Read;

use serde_json::value::RawValue;
use sluice_dispatcher::{EnqueueOptions, RetryPolicy};

use super::{Access, EnqueueArgs, connect, print, topic};
use crate::Failure;

pub(super) async fn run(args: EnqueueArgs) -> Result<i32, Failure> {
    let given = args.payload.clone().unwrap_or_default();
    let text = if given == "-" {
        let mut buf = String::new();
        std::io::stdin()
            .read_to_string(&mut buf)
            .map_err(|e| Failure::new(format!("cannot read the payload from stdin: {e}")))?;
        buf
    } else {
        given
    };
    // Validated, then stored byte for byte: a `RawValue` is written as it was given (key order,
    // duplicate keys, big integers, `-0` kept), never re-serialized.
    let payload: Box<RawValue> = serde_json::from_str(&text)
        .map_err(|e| Failure::new(format!("--payload is not valid JSON: {e}")))?;
    let topic = topic(&args.target)?
        .set_max_payload_bytes(args.max_payload_bytes)
        .map_err(|e| Failure::new(format!("--max-payload-bytes: {}", e.reason())))?;
    let mut options = EnqueueOptions::new();
    if let Some(delay) = args.delay {
        options = options.delay(delay);
    }
    if let Some(key) = &args.dedup {
        options = options.dedup(key.clone(), args.dedup_ttl);
    }
    if let Some(policy) = retry_policy(args.max_attempts)? {
        options = options.retry(policy);
    }
    // Refused before connecting; the library's field names are the flags' with dashes.
    options
        .check()
        .map_err(|e| Failure::flag(&e.field().replace('_', "-"), e.reason()))?;
    let d = connect(&args.target, Access::Write).await?;
    let outcome = d
        .producer::<Box<RawValue>>(&topic)
        .enqueue_with(&payload, options)
        .await
        .map_err(|e| Failure::new(e.to_string()))?;
    print(&outcome)
}

/// `--max-attempts N` as a retry policy with the default backoff (`None` without the flag).
pub(super) fn retry_policy(max_attempts: Option<u32>) -> Result<Option<RetryPolicy>, Failure> {
    let Some(attempts) = max_attempts else {
        return Ok(None);
    };
    let attempts = std::num::NonZeroU32::new(attempts)
        .ok_or_else(|| Failure::new("--max-attempts: must be at least 1"))?;
    let default = RetryPolicy::default();
    RetryPolicy::exponential(attempts, default.base_delay(), default.max_delay())
        .map(Some)
        .map_err(|e| Failure::new(format!("--max-attempts: {}", e.reason())))
}
