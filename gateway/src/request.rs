//! A rate-limit request as the matcher reads it: descriptors of (key, value) entries, each
//! with an optional limit override and hits addend. Borrowed, so a service can match protocol
//! messages without copying them: implement [`Entry`] for its entry type.

use crate::unit::Unit;

/// One (key, value) entry of a request descriptor.
pub trait Entry {
    /// The entry's key, e.g. `remote_address`.
    fn key(&self) -> &str;
    /// The entry's value; empty when the client sent none.
    fn value(&self) -> &str;
}

impl Entry for (&str, &str) {
    fn key(&self) -> &str {
        self.0
    }
    fn value(&self) -> &str {
        self.1
    }
}

impl Entry for (String, String) {
    fn key(&self) -> &str {
        &self.0
    }
    fn value(&self) -> &str {
        &self.1
    }
}

/// A descriptor's `limit` override (Envoy's `RateLimitDescriptor.limit`): when the domain is
/// known it replaces whatever the config says for the descriptor, counted in fixed windows of
/// the unit, with no name, no replaces and no shadow mode (as in envoyproxy/ratelimit). Build
/// the unit with [`Unit::from_envoy_number`]; an override whose unit is UNKNOWN is a bad
/// request for the service to refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitOverride {
    /// Requests per unit.
    pub requests_per_unit: u32,
    /// The unit.
    pub unit: Unit,
}

/// One descriptor of a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestDescriptor<'a, E> {
    /// The entries, outermost first.
    pub entries: &'a [E],
    /// The per-descriptor limit override, if the client sent one.
    pub limit_override: Option<LimitOverride>,
    /// The per-descriptor hits addend, if the client sent one (0: check without counting).
    pub hits_addend: Option<u64>,
}

impl<'a, E> RequestDescriptor<'a, E> {
    /// A descriptor with these entries, no override, the request's hits addend.
    pub fn new(entries: &'a [E]) -> Self {
        Self {
            entries,
            limit_override: None,
            hits_addend: None,
        }
    }

    /// With a limit override.
    pub fn with_override(mut self, requests_per_unit: u32, unit: Unit) -> Self {
        self.limit_override = Some(LimitOverride {
            requests_per_unit,
            unit,
        });
        self
    }

    /// With its own hits addend.
    pub fn with_hits_addend(mut self, hits: u64) -> Self {
        self.hits_addend = Some(hits);
        self
    }
}

/// The units a descriptor charges: its own addend when set (0 checks without counting), else
/// the request's, where 0 (unset in proto3) means 1.
pub fn hits(request_addend: u64, descriptor_addend: Option<u64>) -> u64 {
    descriptor_addend.unwrap_or(request_addend.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_follow_envoy() {
        assert_eq!(hits(0, None), 1);
        assert_eq!(hits(5, None), 5);
        assert_eq!(hits(5, Some(0)), 0);
        assert_eq!(hits(0, Some(3)), 3);
    }
}
