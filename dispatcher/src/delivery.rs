//! Stream entries as the worker receives them: taken out of an `XREADGROUP` / `XAUTOCLAIM`
//! reply without copying the field values, then decoded into a [`Job`].

use std::{
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use redis::Value;
use serde::de::DeserializeOwned;

use crate::{
    codec::Codec,
    job::{Job, Meta},
    value::{as_bytes, for_each_pair, into_bytes, into_string},
};

/// One delivered stream entry: its id and the raw `meta` and `payload` fields (empty when
/// missing; the decode step dead-letters such an entry).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Delivery {
    pub(crate) id: String,
    pub(crate) meta: Vec<u8>,
    pub(crate) payload: Vec<u8>,
}

/// Which stream of a worker an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The topic stream.
    Topic,
    /// The group's retry stream.
    Retry,
}

/// One entry: `[id, [field, value, ...]]`. Fields are nil for an entry deleted while pending.
fn parse_entry(v: Value) -> Result<Delivery, String> {
    let Value::Array(parts) = v else {
        return Err("a stream entry is not an array".to_owned());
    };
    let mut parts = parts.into_iter();
    let id = parts
        .next()
        .and_then(into_string)
        .ok_or_else(|| "a stream entry has no id".to_owned())?;
    let mut delivery = Delivery {
        id,
        ..Delivery::default()
    };
    if let Some(fields) = parts.next() {
        for_each_pair(fields, |field, value| {
            match as_bytes(&field).unwrap_or_default() {
                b"meta" => delivery.meta = into_bytes(value).unwrap_or_default(),
                b"payload" => delivery.payload = into_bytes(value).unwrap_or_default(),
                _ => {}
            }
        });
    }
    Ok(delivery)
}

/// Entries of a list of stream entries (`[[id, fields], ...]`), appended to `out`.
pub(crate) fn parse_entries(
    v: Value,
    source: Source,
    out: &mut Vec<(Source, Delivery)>,
) -> Result<(), String> {
    match v {
        Value::Array(entries) => {
            out.reserve(entries.len());
            for entry in entries {
                out.push((source, parse_entry(entry)?));
            }
            Ok(())
        }
        Value::Nil => Ok(()),
        _ => Err("stream entries are not an array".to_owned()),
    }
}

/// An `XREADGROUP` reply (nil, `[[key, entries], ...]` or a RESP3 map of key to entries),
/// appended to `out`; entries of `retry_stream` are tagged [`Source::Retry`].
pub(crate) fn parse_read_reply(
    reply: Value,
    retry_stream: &[u8],
    out: &mut Vec<(Source, Delivery)>,
) -> Result<(), String> {
    let streams = match reply {
        Value::Nil => return Ok(()),
        Value::Map(pairs) => pairs,
        Value::Array(items) => {
            let mut pairs = Vec::with_capacity(items.len());
            for item in items {
                let Value::Array(kv) = item else {
                    return Err("an XREADGROUP stream is not an array".to_owned());
                };
                let mut kv = kv.into_iter();
                match (kv.next(), kv.next()) {
                    (Some(k), Some(v)) => pairs.push((k, v)),
                    _ => return Err("an XREADGROUP stream has no entries".to_owned()),
                }
            }
            pairs
        }
        _ => return Err("an XREADGROUP reply is not an array".to_owned()),
    };
    for (key, entries) in streams {
        let key = into_bytes(key).ok_or_else(|| "a stream key is not a string".to_owned())?;
        let source = if key == retry_stream {
            Source::Retry
        } else {
            Source::Topic
        };
        parse_entries(entries, source, out)?;
    }
    Ok(())
}

/// An `XAUTOCLAIM` reply: `[next cursor, entries, deleted ids]`.
pub(crate) fn parse_autoclaim_reply(
    reply: Value,
    source: Source,
    out: &mut Vec<(Source, Delivery)>,
) -> Result<String, String> {
    let Value::Array(parts) = reply else {
        return Err("an XAUTOCLAIM reply is not an array".to_owned());
    };
    let mut parts = parts.into_iter();
    let cursor = parts
        .next()
        .and_then(into_string)
        .ok_or_else(|| "an XAUTOCLAIM reply has no cursor".to_owned())?;
    if let Some(entries) = parts.next() {
        parse_entries(entries, source, out)?;
    }
    Ok(cursor)
}

/// The job metadata of a delivery.
pub(crate) fn decode_meta(raw: &[u8]) -> Result<Meta, String> {
    serde_json::from_slice(raw).map_err(|e| format!("malformed job metadata: {e}"))
}

/// The job a handler sees, from decoded metadata and payload.
pub(crate) fn job<T>(
    payload: T,
    meta: &Meta,
    entry_id: &str,
    topic: &Arc<str>,
    group: &Arc<str>,
) -> Job<T> {
    Job {
        payload,
        id: meta.id.clone(),
        attempt: meta.attempts.saturating_add(1),
        enqueued_at: UNIX_EPOCH + Duration::from_millis(meta.enqueued_at_ms),
        entry_id: entry_id.to_owned(),
        topic: topic.clone(),
        group: group.clone(),
    }
}

/// Decode the payload of a delivery with `codec`.
pub(crate) fn decode_payload<T: DeserializeOwned, C: Codec>(
    codec: &C,
    bytes: &[u8],
) -> Result<T, String> {
    codec
        .decode(bytes)
        .map_err(|e| format!("payload does not decode: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(id: &str, meta: &str, payload: &str) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(vec![
                bulk("meta"),
                bulk(meta),
                bulk("payload"),
                bulk(payload),
            ]),
        ])
    }

    #[test]
    fn read_reply_resp2_and_resp3() {
        let resp2 = Value::Array(vec![
            Value::Array(vec![
                bulk("p:{t}:stream"),
                Value::Array(vec![entry("1-0", "{}", "a"), entry("1-1", "{}", "b")]),
            ]),
            Value::Array(vec![
                bulk("p:{t}:group:g:retry"),
                Value::Array(vec![entry("2-0", "m", "c")]),
            ]),
        ]);
        let resp3 = Value::Map(vec![
            (
                bulk("p:{t}:stream"),
                Value::Array(vec![entry("1-0", "{}", "a"), entry("1-1", "{}", "b")]),
            ),
            (
                bulk("p:{t}:group:g:retry"),
                Value::Array(vec![entry("2-0", "m", "c")]),
            ),
        ]);
        for reply in [resp2, resp3] {
            let mut out = Vec::new();
            parse_read_reply(reply, b"p:{t}:group:g:retry", &mut out).unwrap();
            assert_eq!(out.len(), 3);
            assert_eq!(out[0].0, Source::Topic);
            assert_eq!(out[1].1.id, "1-1");
            assert_eq!(out[1].1.payload, b"b");
            assert_eq!(out[2].0, Source::Retry);
            assert_eq!(out[2].1.meta, b"m");
        }
        let mut out = Vec::new();
        parse_read_reply(Value::Nil, b"x", &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn missing_fields_are_empty_and_junk_is_an_error() {
        let mut out = Vec::new();
        let deleted = Value::Array(vec![bulk("3-0"), Value::Nil]);
        parse_entries(Value::Array(vec![deleted]), Source::Topic, &mut out).unwrap();
        assert_eq!(out[0].1.id, "3-0");
        assert!(out[0].1.meta.is_empty() && out[0].1.payload.is_empty());
        assert!(parse_read_reply(Value::Int(3), b"x", &mut out).is_err());
        assert!(parse_entries(Value::Array(vec![Value::Int(1)]), Source::Topic, &mut out).is_err());
    }

    #[test]
    fn autoclaim_reply() {
        let reply = Value::Array(vec![
            bulk("0-0"),
            Value::Array(vec![entry("5-0", "{}", "x")]),
            Value::Array(vec![]),
        ]);
        let mut out = Vec::new();
        let cursor = parse_autoclaim_reply(reply, Source::Retry, &mut out).unwrap();
        assert_eq!(cursor, "0-0");
        assert_eq!(out[0].0, Source::Retry);
        assert_eq!(out[0].1.id, "5-0");
    }
}
