//! Key ids: what a matched descriptor is counted under, as the id passed to the limiter.
//!
//! ```text
//! {<tag>}<domain>:<key>=<value>:<key>=<value>...      (~ instead of = for a shared wildcard)
//! ```
//!
//! - The `{tag}` is the domain (escaped: `%` → `%25`, `}` → `%7D`), so every descriptor of a
//!   request hashes to one Cluster slot and the request is checked in one script call, all or
//!   nothing. The price: one domain's counters all live in one slot (one node of a Cluster).
//! - After the tag, the domain and every entry, with `%`, `:`, `=`, `~` and control bytes
//!   percent-encoded: an id decodes back to its parts, so distinct descriptors never share a
//!   counter, whatever bytes their keys and values hold.
//! - Values are the request's, so a default key (`key` without `value`) and a wildcard count
//!   each value apart, as envoy does; an entry matched by a `share_threshold` wildcard is
//!   written as `key~pattern` instead: every value it matches shares one counter (a request
//!   value can't collide with it: a request value is never written after `~`).
//!
//! The limiter then stores a rate under `<prefix>:{<tag>}:<rule>:<algorithm>:<id>`, the rule
//! being [`crate::Rate::rule_name`] (the window).

use std::fmt;

/// A matched descriptor's counter id (see the module docs). Pass [`KeyId::as_bytes`] as the
/// limiter's key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyId(Vec<u8>);

impl KeyId {
    /// Build the id of a descriptor of `domain`: `entries` are (key, value or shared pattern,
    /// shared?) in request order.
    pub(crate) fn new<'e>(
        domain: &str,
        entries: impl IntoIterator<Item = (&'e str, &'e str, bool)>,
    ) -> Self {
        let mut id = Vec::with_capacity(2 * domain.len() + 32);
        id.push(b'{');
        for &b in domain.as_bytes() {
            match b {
                b'%' => id.extend_from_slice(b"%25"),
                b'}' => id.extend_from_slice(b"%7D"),
                _ => id.push(b),
            }
        }
        id.push(b'}');
        escape(&mut id, domain);
        for (key, value, shared) in entries {
            id.push(b':');
            escape(&mut id, key);
            id.push(if shared { b'~' } else { b'=' });
            escape(&mut id, value);
        }
        Self(id)
    }

    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The hash tag's content: what decides the Cluster slot (the escaped domain).
    pub fn tag(&self) -> &[u8] {
        let end = self.0.iter().position(|&b| b == b'}').unwrap_or(0);
        self.0.get(1..end).unwrap_or_default()
    }
}

impl AsRef<[u8]> for KeyId {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({:?})", String::from_utf8_lossy(&self.0))
    }
}

fn escape(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in text.as_bytes() {
        if matches!(b, b'%' | b':' | b'=' | b'~') || b < 0x20 || b == 0x7f {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        } else {
            out.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn id(domain: &str, entries: &[(&str, &str, bool)]) -> KeyId {
        KeyId::new(domain, entries.iter().copied())
    }

    #[test]
    fn readable_and_tagged_by_the_domain() {
        let k = id("api", &[("user", "42", false), ("path", "/v1*", true)]);
        assert_eq!(k.as_bytes(), b"{api}api:user=42:path~/v1*");
        assert_eq!(k.tag(), b"api");
        let odd = id("a}b%{c", &[("k", "x", false)]);
        assert_eq!(odd.as_bytes(), b"{a%7Db%25{c}a}b%25{c:k=x");
        assert_eq!(sluice_shared::hash_tag(odd.as_bytes()), Some(odd.tag()));
        assert_eq!(odd.tag(), b"a%7Db%25{c");
    }

    #[test]
    fn distinct_descriptors_get_distinct_ids() {
        let cases: Vec<KeyId> = vec![
            id("d", &[]),
            id("d", &[("k", "", false)]),
            id("d", &[("k", "v", false)]),
            id("d", &[("k", "v", true)]),
            id("d", &[("k=v", "", false)]),
            id("d", &[("k", "=v", false)]),
            id("d", &[("k", "v:k=w", false)]),
            id("d", &[("k", "v", false), ("k", "w", false)]),
            id("d", &[("k", "v%3Ak=w", false)]),
            id("d:k=v", &[]),
            id("d", &[("k", "v\n", false)]),
            id("d", &[("k", "v~", false)]),
            id("d", &[("k~v", "", false)]),
            id("e", &[("k", "v", false)]),
            id("{d}", &[("k", "v", false)]),
            id("d", &[("k", "\u{1F600}", false)]),
        ];
        let unique: HashSet<&KeyId> = cases.iter().collect();
        assert_eq!(unique.len(), cases.len(), "{cases:?}");
    }
}
