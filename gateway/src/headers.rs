//! The IETF rate-limit headers (draft-ietf-httpapi-ratelimit-headers, draft-10/11), written as
//! RFC 9651 structured fields, plus `Retry-After` and, when asked for, the legacy
//! `X-RateLimit-*` trio.
//!
//! ```text
//! RateLimit-Policy: "per-user";q=100;w=60, "daily";q=10000;w=86400
//! RateLimit: "per-user";r=0;t=12, "daily";r=9512;t=40210
//! Retry-After: 12
//! ```
//!
//! One list member per policy in force (the limits a request was checked against; shadow-mode
//! limits are not in force and are left out). A member is an sf-string (the policy's name)
//! with integer parameters: `q` the quota, `w` the window in seconds (rounded up) on
//! `RateLimit-Policy`; `r` the remaining quota and `t` the seconds until it resets (rounded up)
//! on `RateLimit`. The same name ties a `RateLimit` member to its policy.
//!
//! Transport-independent: [`headers`] returns (name, value) pairs that a gRPC response
//! (`response_headers_to_add`), an HTTP response or a tower layer adds as they are.

use std::{fmt::Write as _, time::Duration};

/// `RateLimit-Policy`.
pub const POLICY: &str = "RateLimit-Policy";
/// `RateLimit`.
pub const RATELIMIT: &str = "RateLimit";
/// `Retry-After`.
pub const RETRY_AFTER: &str = "Retry-After";
/// Legacy `X-RateLimit-Limit` (only with [`HeaderStyle::with_legacy`]).
pub const LEGACY_LIMIT: &str = "X-RateLimit-Limit";
/// Legacy `X-RateLimit-Remaining`.
pub const LEGACY_REMAINING: &str = "X-RateLimit-Remaining";
/// Legacy `X-RateLimit-Reset`.
pub const LEGACY_RESET: &str = "X-RateLimit-Reset";

/// One policy in force and its state after a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyStatus {
    /// The policy's name (a limit's `name`, else its descriptor's config path). Any text:
    /// bytes an sf-string can't hold are percent-encoded.
    pub name: String,
    /// The quota: requests per window.
    pub quota: u64,
    /// The window.
    pub window: Duration,
    /// Quota left now.
    pub remaining: u64,
    /// Time until the quota resets.
    pub reset: Duration,
}

impl PolicyStatus {
    /// The status of a limiter [`Rule`](sluice_limiter::Rule) after a [`Decision`]: named by
    /// the rule, `q` its limit, `w` its window, `r` and `t` from the decision (how the tower
    /// layer reports the rules it checked).
    ///
    /// [`Decision`]: sluice_limiter::Decision
    pub fn from_rule(rule: &sluice_limiter::Rule, decision: &sluice_limiter::Decision) -> Self {
        Self {
            name: rule.name().to_owned(),
            quota: rule.limit(),
            window: rule.window(),
            remaining: decision.remaining,
            reset: decision.reset_after,
        }
    }
}

/// Which headers to write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeaderStyle {
    legacy: bool,
}

impl HeaderStyle {
    /// The IETF fields (and `Retry-After`) only: the default.
    pub fn ietf() -> Self {
        Self { legacy: false }
    }

    /// Also the legacy `X-RateLimit-Limit`, `-Remaining` and `-Reset`, for the policy with the
    /// least quota left (the one a client runs into first).
    pub fn with_legacy(legacy: bool) -> Self {
        Self { legacy }
    }

    /// Whether the legacy headers are written.
    pub fn legacy(&self) -> bool {
        self.legacy
    }
}

/// The headers for a decision: `RateLimit-Policy` and `RateLimit` when any policy is in force,
/// `Retry-After` when `retry_after` is given (a denial), the legacy trio when `style` asks.
pub fn headers(
    policies: &[PolicyStatus],
    retry_after: Option<Duration>,
    style: HeaderStyle,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::with_capacity(6);
    if !policies.is_empty() {
        out.push((POLICY, policy_field(policies)));
        out.push((RATELIMIT, ratelimit_field(policies)));
    }
    if let Some(after) = retry_after {
        out.push((RETRY_AFTER, seconds_up(after).to_string()));
    }
    if style.legacy {
        if let Some(tightest) = policies.iter().min_by_key(|p| p.remaining) {
            out.push((LEGACY_LIMIT, tightest.quota.to_string()));
            out.push((LEGACY_REMAINING, tightest.remaining.to_string()));
            out.push((LEGACY_RESET, seconds_up(tightest.reset).to_string()));
        }
    }
    out
}

/// Append `headers` (as [`headers`] returns them) to an `http` header map. Appended, not
/// inserted: field lines of one structured-field list combine, so the policies an inner
/// layer reported stay. A pair that is not a valid header is skipped (there are none: the
/// names are the constants above, the values printable ASCII by construction).
pub fn append_to(map: &mut http::HeaderMap, headers: Vec<(&'static str, String)>) {
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::try_from(value),
        ) {
            map.append(name, value);
        }
    }
}

/// `RateLimit-Policy`'s value: `"name";q=Q;w=W` per policy, comma-separated.
pub fn policy_field(policies: &[PolicyStatus]) -> String {
    list(policies, |out, p| {
        let _ = write!(out, ";q={};w={}", p.quota, seconds_up(p.window));
    })
}

/// `RateLimit`'s value: `"name";r=R;t=T` per policy, comma-separated.
pub fn ratelimit_field(policies: &[PolicyStatus]) -> String {
    list(policies, |out, p| {
        let _ = write!(out, ";r={};t={}", p.remaining, seconds_up(p.reset));
    })
}

fn list(policies: &[PolicyStatus], params: impl Fn(&mut String, &PolicyStatus)) -> String {
    let mut out = String::with_capacity(policies.len() * 32);
    for (i, p) in policies.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        sf_string(&mut out, &p.name);
        params(&mut out, p);
    }
    out
}

/// Append `text` as an RFC 9651 sf-string: in double quotes, `"` and `\` escaped. An
/// sf-string holds printable ASCII only, so other bytes (and `%`, to keep the encoding
/// unambiguous) are percent-encoded.
pub fn sf_string(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('"');
    let plain = |b: u8| matches!(b, 0x20..=0x7e) && !matches!(b, b'"' | b'\\' | b'%');
    if text.bytes().all(plain) {
        out.push_str(text);
        out.push('"');
        return;
    }
    for &b in text.as_bytes() {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            b'%' => out.push_str("%25"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 15)]));
            }
        }
    }
    out.push('"');
}

/// Whole seconds, rounded up (an sf-integer is whole; a client waiting the rounded-down value
/// would come back too early).
pub fn seconds_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, quota: u64, window: u64, remaining: u64, reset_ms: u64) -> PolicyStatus {
        PolicyStatus {
            name: name.to_owned(),
            quota,
            window: Duration::from_secs(window),
            remaining,
            reset: Duration::from_millis(reset_ms),
        }
    }

    #[test]
    fn one_policy_as_in_the_draft() {
        let p = [policy("per-user", 100, 60, 0, 11_200)];
        let h = headers(&p, Some(Duration::from_millis(11_200)), HeaderStyle::ietf());
        assert_eq!(
            h,
            vec![
                (POLICY, r#""per-user";q=100;w=60"#.to_owned()),
                (RATELIMIT, r#""per-user";r=0;t=12"#.to_owned()),
                (RETRY_AFTER, "12".to_owned()),
            ]
        );
    }

    #[test]
    fn several_policies_are_list_members_in_order() {
        let p = [
            policy("burst", 10, 1, 3, 400),
            policy("daily", 10_000, 86_400, 9_512, 40_210_000),
        ];
        assert_eq!(
            policy_field(&p),
            r#""burst";q=10;w=1, "daily";q=10000;w=86400"#
        );
        assert_eq!(
            ratelimit_field(&p),
            r#""burst";r=3;t=1, "daily";r=9512;t=40210"#
        );
        let h = headers(&p, None, HeaderStyle::with_legacy(true));
        assert_eq!(h.len(), 5, "{h:?}");
        assert!(h.iter().all(|(k, _)| *k != RETRY_AFTER));
        assert!(h.contains(&(LEGACY_LIMIT, "10".to_owned())));
        assert!(h.contains(&(LEGACY_REMAINING, "3".to_owned())));
        assert!(h.contains(&(LEGACY_RESET, "1".to_owned())));
    }

    #[test]
    fn appended_to_an_http_header_map() {
        let mut map = http::HeaderMap::new();
        map.append(
            "ratelimit",
            http::HeaderValue::from_static(r#""inner";r=1;t=1"#),
        );
        let p = [policy("outer", 5, 60, 4, 1000)];
        append_to(
            &mut map,
            headers(
                &p,
                Some(Duration::from_secs(2)),
                HeaderStyle::with_legacy(true),
            ),
        );
        let all: Vec<_> = map.get_all("ratelimit").iter().collect();
        assert_eq!(all, [r#""inner";r=1;t=1"#, r#""outer";r=4;t=1"#]);
        assert_eq!(map["ratelimit-policy"], r#""outer";q=5;w=60"#);
        assert_eq!(map["retry-after"], "2");
        assert_eq!(map["x-ratelimit-remaining"], "4");
    }

    #[test]
    fn names_are_valid_sf_strings() {
        let mut s = String::new();
        sf_string(&mut s, r#"a "q" \ 100% é"#);
        assert_eq!(s, r#""a \"q\" \\ 100%25 %C3%A9""#);
        let mut s = String::new();
        sf_string(&mut s, "shop.route_/api/*/orders\ttab");
        assert_eq!(s, r#""shop.route_/api/*/orders%09tab""#);
    }

    #[test]
    fn windows_and_resets_round_up_and_nothing_without_policies() {
        assert_eq!(seconds_up(Duration::from_millis(1500)), 2);
        assert_eq!(seconds_up(Duration::from_secs(2)), 2);
        assert_eq!(seconds_up(Duration::ZERO), 0);
        let p = [PolicyStatus {
            window: Duration::from_millis(1500),
            ..policy("x", 5, 0, 5, 1)
        }];
        assert_eq!(policy_field(&p), r#""x";q=5;w=2"#);
        assert_eq!(ratelimit_field(&p), r#""x";r=5;t=1"#);
        assert!(headers(&[], None, HeaderStyle::with_legacy(true)).is_empty());
        assert_eq!(
            headers(&[], Some(Duration::from_secs(3)), HeaderStyle::ietf()),
            vec![(RETRY_AFTER, "3".to_owned())]
        );
    }
}
