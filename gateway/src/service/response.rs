//! What the service answers: [`Response`] (one [`DescriptorStatus`] per request descriptor,
//! the policies in force for the headers, when to retry), in the terms of Envoy's
//! `RateLimitResponse` but free of any transport.

use std::time::Duration;

use serde::Serialize;
use sluice_limiter::Source;

use crate::{
    headers::{self, HeaderStyle, PolicyStatus},
    unit::Unit,
};

/// Envoy's response code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum Code {
    /// Under the limit (or not limited).
    Ok,
    /// Over the limit.
    OverLimit,
}

impl Code {
    /// Envoy's `RateLimitResponse.Code` number (OK 1, OVER_LIMIT 2).
    pub fn envoy_number(self) -> i32 {
        match self {
            Code::Ok => 1,
            Code::OverLimit => 2,
        }
    }
}

/// A descriptor's limit as a response reports it (`current_limit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CurrentLimit {
    /// Requests per unit (or per window).
    pub requests_per_unit: u32,
    /// The unit; `None` (Envoy's UNKNOWN) for a window no unit has, e.g. `90s`.
    #[serde(serialize_with = "ser_unit")]
    pub unit: Option<Unit>,
    /// The limit's `name`, empty when unnamed.
    pub name: String,
}

/// One request descriptor's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DescriptorStatus {
    /// OK or OVER_LIMIT (shadow mode answers OK).
    pub code: Code,
    /// The limit reported: the one that refused, else the one with the least left; `None`
    /// when nothing matched (and for `unlimited`).
    pub current_limit: Option<CurrentLimit>,
    /// Quota left in that limit (4294967295 for `unlimited`, 0 when nothing matched).
    pub limit_remaining: u32,
    /// Time until that limit resets; `None` when nothing is counted.
    #[serde(
        serialize_with = "ser_opt_ms",
        rename = "duration_until_reset_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub duration_until_reset: Option<Duration>,
}

impl DescriptorStatus {
    pub(crate) fn ok_without_limit() -> Self {
        Self {
            code: Code::Ok,
            current_limit: None,
            limit_remaining: 0,
            duration_until_reset: None,
        }
    }

    pub(crate) fn unlimited() -> Self {
        Self {
            limit_remaining: u32::MAX,
            ..Self::ok_without_limit()
        }
    }
}

/// The answer to one rate-limit request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Response {
    /// OVER_LIMIT when any descriptor is (shadow mode aside), else OK.
    pub overall_code: Code,
    /// One per request descriptor, in request order.
    pub statuses: Vec<DescriptorStatus>,
    /// The limits in force that were checked, for the IETF headers (shadow ones left out).
    #[serde(skip)]
    pub policies: Vec<PolicyStatus>,
    /// When refused: how long until the request could pass.
    #[serde(serialize_with = "ser_opt_ms", rename = "retry_after_ms")]
    pub retry_after: Option<Duration>,
    /// Which path answered: Redis, or the outage policy (`None` when Redis was not needed).
    pub answered_by: Option<Source>,
    /// When the decision was made, in microseconds since the Unix epoch: Redis `TIME` (the
    /// local clock when the outage policy answered); `None` when Redis was not needed. gRPC
    /// sends it as the `sluice-decided-at-us` response metadata when asked
    /// ([`crate::grpc::ASK_DECIDED_AT`]).
    #[serde(rename = "time_us", skip_serializing_if = "Option::is_none")]
    pub decided_at_us: Option<u64>,
}

impl Response {
    /// The headers to send with this answer (see [`crate::headers`]).
    pub fn headers(&self, style: HeaderStyle) -> Vec<(&'static str, String)> {
        headers::headers(&self.policies, self.retry_after, style)
    }

    /// True when the request may pass.
    pub fn is_ok(&self) -> bool {
        self.overall_code == Code::Ok
    }
}

fn ser_unit<S: serde::Serializer>(unit: &Option<Unit>, s: S) -> Result<S::Ok, S::Error> {
    match unit {
        Some(u) => s.serialize_str(&u.as_str().to_ascii_uppercase()),
        None => s.serialize_str("UNKNOWN"),
    }
}

fn ser_opt_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        None => s.serialize_none(),
    }
}
