//! `--http URL`: one `POST` per job.
//!
//! The body is the payload as enqueued (JSON, `Content-Type: application/json`); headers
//! `Sluice-Job-Id`, `Sluice-Job-Attempt`, `Sluice-Topic`, `Sluice-Group`. The whole call
//! (connect, send, response) is bounded by `--job-timeout`.
//!
//! | response | outcome |
//! | --- | --- |
//! | 2xx | acknowledge |
//! | 429, 503 | retry after `Retry-After` (seconds or an HTTP date), else the backoff |
//! | other 4xx | dead-letter now (the status and the start of the body are the error) |
//! | 5xx, 1xx, 3xx left after redirects | retry with backoff |
//! | refused connection, timeout, broken response | retry with backoff |

use std::time::{Duration, SystemTime};

use reqwest::{
    Client, StatusCode, Url,
    header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER},
};

use super::{JobInfo, Outcome};
use crate::Failure;

/// Bytes of a response body kept in the error of a failed attempt.
const BODY_BYTES: usize = 512;

/// The endpoint and its client.
#[derive(Debug)]
pub(super) struct Http {
    client: Client,
    url: Url,
}

impl Http {
    /// Check the URL (http:// only: this build has no TLS) and build the client.
    pub(super) fn parse(url: &str, timeout: Duration) -> Result<Self, Failure> {
        let url = Url::parse(url).map_err(|e| Failure::flag("http", format!("{url}: {e}")))?;
        match url.scheme() {
            "http" => {}
            "https" => {
                return Err(Failure::flag(
                    "http",
                    "https:// is not supported by this build (no TLS); put a local proxy in front",
                ));
            }
            other => {
                return Err(Failure::flag(
                    "http",
                    format!("unsupported scheme {other:?} (expected http://)"),
                ));
            }
        }
        let client = Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| Failure::flag("http", format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { client, url })
    }

    pub(super) async fn run(&self, job: &JobInfo<'_>, payload: &[u8]) -> Outcome {
        let sent = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header("sluice-job-id", job.id)
            .header("sluice-job-attempt", job.attempt.to_string())
            .header("sluice-topic", job.topic)
            .header("sluice-group", job.group)
            .body(payload.to_vec())
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(e) => return Outcome::Retry(describe(&self.url, &e), None),
        };
        let status = response.status();
        if status.is_success() {
            return Outcome::Success;
        }
        let retry_after = retry_after(response.headers(), SystemTime::now());
        let body = body_start(&mut response).await;
        let message = format!("POST {}: HTTP {status}{body}", self.url);
        match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                Outcome::Retry(message, retry_after)
            }
            s if s.is_client_error() => Outcome::DeadLetter(message),
            _ => Outcome::Retry(message, None),
        }
    }
}

/// A transport error with its causes (reqwest's own message hides "connection refused").
fn describe(url: &Url, e: &reqwest::Error) -> String {
    let mut text = format!("POST {url}: ");
    if e.is_timeout() {
        text.push_str("timed out (--job-timeout)");
    } else {
        text.push_str(&e.to_string());
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The start of the body, as `: text`, or nothing.
async fn body_start(response: &mut reqwest::Response) -> String {
    let mut kept = Vec::new();
    while kept.len() < BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    kept.truncate(BODY_BYTES);
    let text = String::from_utf8_lossy(&kept).trim().to_owned();
    if text.is_empty() {
        text
    } else {
        format!(": {text}")
    }
}

/// `Retry-After` as a delay: delta-seconds or an HTTP date (a past date is no delay).
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:10 GMT"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(10)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:00:00 GMT"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn only_http_urls() {
        let t = Duration::from_secs(1);
        assert!(Http::parse("http://127.0.0.1:9/x", t).is_ok());
        assert!(Http::parse("https://127.0.0.1/x", t).is_err());
        assert!(Http::parse("ftp://127.0.0.1/x", t).is_err());
        assert!(Http::parse("not a url", t).is_err());
    }
}
