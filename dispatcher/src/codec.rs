//! How typed jobs and messages become bytes.

use serde::{Serialize, de::DeserializeOwned};

/// Turns values into payload bytes and back. [`JsonCodec`] is the default; implement this for
/// MessagePack, Protobuf, ... The codec must be the same on producers and workers of a topic.
pub trait Codec: Send + Sync + 'static {
    /// Encode `value`; the error text ends up in [`crate::DispatchError::Encode`].
    fn encode<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, String>;
    /// Decode `bytes`; the error text ends up in the dead letter of a job that fails to decode.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, String>;
}

/// JSON through `serde_json`: readable in `redis-cli` and in `sluice jobs dlq list`.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCodec;

impl Codec for JsonCodec {
    fn encode<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, String> {
        serde_json::to_vec(value).map_err(|e| e.to_string())
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}
