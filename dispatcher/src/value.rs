//! Readers of raw `redis::Value` replies, RESP2 and RESP3 alike: the one place that knows
//! which reply types carry bytes, text and numbers.

use redis::Value;

/// The bytes of a string reply (bulk, simple or verbatim), borrowed.
pub(crate) fn as_bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        _ => None,
    }
}

/// The bytes of a string reply, taken out without a copy.
pub(crate) fn into_bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.into_bytes()),
        _ => None,
    }
}

/// A string reply that is valid UTF-8 (ids, cursors).
pub(crate) fn into_string(v: Value) -> Option<String> {
    into_bytes(v).and_then(|b| String::from_utf8(b).ok())
}

/// A string reply as text, invalid UTF-8 replaced (names, messages).
pub(crate) fn as_text(v: &Value) -> Option<String> {
    as_bytes(v).map(|b| String::from_utf8_lossy(b).into_owned())
}

/// A non-negative integer, sent as an integer or as its decimal text.
pub(crate) fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => std::str::from_utf8(as_bytes(other)?).ok()?.parse().ok(),
    }
}

/// Calls `f` on each pair of an array (`[k1, v1, k2, v2]`) or a RESP3 map, without collecting
/// the pairs first.
pub(crate) fn for_each_pair(v: Value, mut f: impl FnMut(Value, Value)) {
    match v {
        Value::Map(pairs) => pairs.into_iter().for_each(|(k, v)| f(k, v)),
        Value::Array(items) => {
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                f(k, v);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_numbers_in_every_form() {
        let bulk = Value::BulkString(b"42".to_vec());
        let simple = Value::SimpleString("42".to_owned());
        let verbatim = Value::VerbatimString {
            format: redis::VerbatimFormat::Text,
            text: "42".to_owned(),
        };
        for v in [&bulk, &simple, &verbatim] {
            assert_eq!(as_bytes(v), Some(&b"42"[..]));
            assert_eq!(as_text(v).as_deref(), Some("42"));
            assert_eq!(as_u64(v), Some(42));
            assert_eq!(into_string(v.clone()).as_deref(), Some("42"));
        }
        assert_eq!(as_u64(&Value::Int(7)), Some(7));
        assert_eq!(as_u64(&Value::Int(-1)), None);
        assert_eq!(as_u64(&Value::Nil), None);
        assert_eq!(
            as_text(&Value::BulkString(vec![0xff])).as_deref(),
            Some("\u{fffd}")
        );
        assert_eq!(into_string(Value::BulkString(vec![0xff])), None);
        let mut pairs = Vec::new();
        for_each_pair(
            Value::Array(vec![Value::Int(1), Value::Int(2), Value::Int(3)]),
            |k, v| pairs.push((k, v)),
        );
        assert_eq!(pairs, vec![(Value::Int(1), Value::Int(2))]);
    }
}
