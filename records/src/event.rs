//! `ImageEvent`: what every source writes to the `images` topic.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Where an image came from; kept as a closed set so sinks can group by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A Kafka topic bridged by `kafka-source`.
    Kafka,
    /// A GCS upload announced by Pub/Sub (OBJECT_FINALIZE), bridged by `gcs-source`.
    Gcs,
    /// The image stream simulator.
    Simulator,
    /// A local file (CLI and embedded pipeline).
    File,
    /// Anything else, including records produced by hand with the `fluvio` CLI.
    #[default]
    #[serde(other)]
    Other,
}

/// Everything about an image event but the image: what rejected records and predictions carry along.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventMeta {
    /// Stable identifier; the prediction id is derived from it, so replays stay idempotent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// The system the image came from.
    #[serde(default)]
    pub source: Source,
    /// Where the original lives (`gs://bucket/object#generation`, `kafka://topic/partition/offset`, a path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// The declared MIME type; informative only: the validator trusts the bytes, never this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Source-specific facts (`bucket`, `object_name`, Kafka headers, ...), carried through to predictions.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub attributes: Map<String, Value>,
    /// When the image was produced at its source (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<String>,
}

impl EventMeta {
    /// A string attribute, for the BigQuery columns `bucket` and `object_name`.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).and_then(Value::as_str)
    }
}

/// One image announced on the `images` topic.
///
/// Only `data` is required on input: a producer may send a bare envelope `{"data": "..."}`, and the
/// validator fills `id` from the content when it is missing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageEvent {
    /// Id, source, URI and the rest of the envelope.
    #[serde(flatten)]
    pub meta: EventMeta,
    /// The image file, base64 (standard or URL-safe, padding optional, a `data:` URI accepted).
    #[serde(default)]
    pub data: String,
}
