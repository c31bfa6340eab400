//! Key naming: one prefix per deployment, one `{hash tag}` per logical entity.
//!
//! Every key Sluice writes has the shape `<prefix>:{<tag>}:<part>:<part>...[:<id>]`. All keys that
//! one Lua script touches are built from the same id, so they carry the same tag and hash to
//! the same Cluster slot: no `CROSSSLOT`, ever.
//!
//! The tag is derived from the caller's id with Redis' own rule: if the id already holds a hash
//! tag (`user:{42}:route`), that tag is used (so ids that share a tag share a slot and can be
//! checked together); otherwise the whole id is the tag. Bytes that would end the tag early
//! (`}`) are escaped, so any byte string is a valid id, braces and all.

use crate::error::ConfigError;

/// The part of a key Redis Cluster hashes, following Redis' rule: the bytes between the first
/// `{` and the first `}` after it, if that span is not empty.
pub fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let close = key[open + 1..].iter().position(|&b| b == b'}')?;
    (close > 0).then(|| &key[open + 1..open + 1 + close])
}

/// The Cluster slot (0..16384) of a key: CRC16 of its hash tag or of the whole key.
pub fn slot(key: &[u8]) -> u16 {
    let hashed = hash_tag(key).unwrap_or(key);
    crc16_xmodem(hashed) % 16384
}

/// CRC16-XMODEM lookup table (polynomial 0x1021), built at compile time.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

fn crc16_xmodem(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &byte| {
        (crc << 8) ^ CRC16_TABLE[usize::from((crc >> 8) as u8 ^ byte)]
    })
}

/// The prefix all of one deployment's keys start with, and the builder of those keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyspace {
    prefix: String,
}

impl Default for Keyspace {
    fn default() -> Self {
        Self {
            prefix: "sluice".to_owned(),
        }
    }
}

impl Keyspace {
    /// A keyspace under `prefix`: 1 to 64 characters, without braces, whitespace or control
    /// characters (a brace would steal the hash tag from the keys built under it).
    pub fn new(prefix: impl Into<String>) -> Result<Self, ConfigError> {
        let prefix = prefix.into();
        if prefix.is_empty() || prefix.len() > 64 {
            return Err(ConfigError::new("prefix", "must be 1 to 64 characters"));
        }
        if prefix
            .chars()
            .any(|c| c == '{' || c == '}' || c.is_whitespace() || c.is_control())
        {
            return Err(ConfigError::new(
                "prefix",
                "must not contain braces, whitespace or control characters",
            ));
        }
        Ok(Self { prefix })
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The escaped tag for `id` (what goes between the braces).
    pub fn tag_of(id: &[u8]) -> Vec<u8> {
        let mut tag = Vec::with_capacity(id.len() + 2);
        push_tag(&mut tag, id);
        tag
    }

    /// The key for `parts` of the entity `id`: `<prefix>:{<tag>}:<parts...>`, followed by
    /// `:<id>` when the tag is only part of the id (so distinct ids never share a key).
    pub fn key(&self, id: &[u8], parts: &[&str]) -> Vec<u8> {
        let tagged_part = hash_tag(id).is_some();
        let mut key = Vec::with_capacity(
            self.prefix.len()
                + id.len()
                + 8
                + parts.iter().map(|p| p.len() + 1).sum::<usize>()
                + if tagged_part { id.len() + 1 } else { 0 },
        );
        key.extend_from_slice(self.prefix.as_bytes());
        key.extend_from_slice(b":{");
        push_tag(&mut key, id);
        key.push(b'}');
        for part in parts {
            key.push(b':');
            key.extend_from_slice(part.as_bytes());
        }
        if tagged_part {
            key.push(b':');
            key.extend_from_slice(id);
        }
        key
    }
}

/// Append the escaped tag of `id` to `out`.
fn push_tag(out: &mut Vec<u8>, id: &[u8]) {
    let source = hash_tag(id).unwrap_or(id);
    if source.is_empty() {
        // An escaped id never is a lone '%', so the empty id keeps a tag of its own.
        out.push(b'%');
        return;
    }
    for &b in source {
        match b {
            b'%' => out.extend_from_slice(b"%25"),
            b'}' => out.extend_from_slice(b"%7D"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_hash_tag_rule() {
        assert_eq!(hash_tag(b"{user1000}.following"), Some(&b"user1000"[..]));
        assert_eq!(hash_tag(b"foo{}{bar}"), None);
        assert_eq!(hash_tag(b"foo{{bar}}zap"), Some(&b"{bar"[..]));
        assert_eq!(hash_tag(b"foo{bar}{zap}"), Some(&b"bar"[..]));
        assert_eq!(hash_tag(b"nobraces"), None);
        // Known slots from the Redis Cluster specification / CLUSTER KEYSLOT.
        assert_eq!(slot(b"123456789"), 12739);
        assert_eq!(slot(b"foo"), 12182);
    }

    #[test]
    fn every_key_of_an_id_shares_one_slot() {
        let ks = Keyspace::default();
        let odd: [&[u8]; 10] = [
            b"plain",
            b"}",
            b"{",
            b"{}",
            b"a}b{c",
            b"user:{42}:route",
            b"",
            b"%7D",
            "\u{1F600} \n\0".as_bytes(),
            b"\xff\xfe{\x00}",
        ];
        for id in odd {
            let a = ks.key(id, &["log"]);
            let b = ks.key(id, &["seq", "x"]);
            assert_eq!(slot(&a), slot(&b), "{:?}", String::from_utf8_lossy(id));
            assert!(hash_tag(&a).is_some(), "{:?}", String::from_utf8_lossy(&a));
        }
    }

    #[test]
    fn distinct_ids_get_distinct_keys() {
        let ks = Keyspace::default();
        let ids: [&[u8]; 8] = [b"}", b"%7D", b"%", b"", b"%25", b"x{a}", b"a", b"{a}"];
        let keys: std::collections::HashSet<Vec<u8>> =
            ids.iter().map(|id| ks.key(id, &["p"])).collect();
        assert_eq!(keys.len(), ids.len());
    }

    #[test]
    fn ids_sharing_a_tag_share_a_slot() {
        let ks = Keyspace::default();
        assert_eq!(
            slot(&ks.key(b"user:{42}:minute", &["a"])),
            slot(&ks.key(b"route:/x:{42}", &["b"]))
        );
    }

    #[test]
    fn prefix_is_validated() {
        assert_eq!(Keyspace::new("a{b").unwrap_err().field(), "prefix");
        assert_eq!(Keyspace::new("").unwrap_err().field(), "prefix");
        assert!(Keyspace::new("app:rl").is_ok());
    }
}
