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

/// Default of the `max_envelope_field_bytes` SmartModule param and of the sources' `max-envelope-field-bytes`:
/// the largest `id`, `source`, `uri`, `content_type`, `event_time`, attribute key or attribute value (as JSON).
/// Ids, URIs and GCS object names (at most 1,024 bytes) fit well under it; the fields are copied into every
/// prediction, its keys and its outputs' rows, so one huge field would make a record that an output refuses
/// (librdkafka's 1 MB `message.max.bytes`, Fluvio's 16 MiB request) and stall the partition behind it.
pub const DEFAULT_ENVELOPE_FIELD_CAP: usize = 4 * 1024;

/// The largest envelope field accepted, in bytes: a field above it makes the event a `malformed_envelope`
/// dead letter. The attributes as a whole (as JSON) may hold [`EnvelopeFieldCap::ATTRIBUTES_FACTOR`] times it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeFieldCap(usize);

impl Default for EnvelopeFieldCap {
    fn default() -> Self {
        Self(DEFAULT_ENVELOPE_FIELD_CAP)
    }
}

/// An envelope field above the [`EnvelopeFieldCap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OversizedField {
    /// The field (`id`, `event_time`, `attributes.<key>`, `attributes`), its name cut to 64 bytes.
    pub field: String,
    /// Its size in bytes (attributes: as JSON).
    pub bytes: usize,
    /// The limit it exceeds.
    pub limit: usize,
}

impl core::fmt::Display for OversizedField {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "the envelope field `{}` is {} bytes, above max_envelope_field_bytes = {}{}",
            self.field,
            self.bytes,
            self.limit / if self.field == "attributes" { EnvelopeFieldCap::ATTRIBUTES_FACTOR } else { 1 },
            if self.field == "attributes" { " (the attributes may hold 16 times it in all)" } else { "" }
        )
    }
}

impl std::error::Error for OversizedField {}

impl EnvelopeFieldCap {
    /// The smallest cap accepted.
    pub const MIN: usize = 64;
    /// The largest cap accepted: dead letters cut envelope fields above 64 KiB anyway ([`crate::EVENT_META_CAP`]).
    pub const MAX: usize = 64 * 1024;
    /// The attributes as a whole (serialised) may be this many times the cap.
    pub const ATTRIBUTES_FACTOR: usize = 16;

    /// A cap of `bytes`, when within [`Self::MIN`]..=[`Self::MAX`].
    pub fn new(bytes: usize) -> Option<Self> {
        (Self::MIN..=Self::MAX).contains(&bytes).then_some(Self(bytes))
    }

    /// The cap in bytes.
    pub fn bytes(self) -> usize {
        self.0
    }

    /// Checks named string fields (`(name, length)`), then the attributes: each key, each value as JSON, and
    /// the whole object as JSON.
    pub fn check<'a>(
        self,
        fields: impl IntoIterator<Item = (&'a str, usize)>,
        attributes: &Map<String, Value>,
    ) -> Result<(), OversizedField> {
        let over = |field: &str, bytes: usize, limit: usize| OversizedField {
            field: field[..floor_boundary(field, 64)].to_string(),
            bytes,
            limit,
        };
        for (name, bytes) in fields {
            if bytes > self.0 {
                return Err(over(name, bytes, self.0));
            }
        }
        let mut total = 2;
        for (key, value) in attributes {
            let value_bytes = json_len(value);
            if key.len() > self.0 {
                return Err(over(&format!("attributes.{key}"), key.len(), self.0).with_key_size());
            }
            if value_bytes > self.0 {
                return Err(over(&format!("attributes.{key}"), value_bytes, self.0));
            }
            total += crate::json_string_len(key) + 1 + value_bytes + 1;
        }
        let limit = self.0 * Self::ATTRIBUTES_FACTOR;
        if total > limit {
            return Err(over("attributes", total, limit));
        }
        Ok(())
    }

    /// [`Self::check`] of an event's envelope.
    pub fn check_meta(self, meta: &EventMeta) -> Result<(), OversizedField> {
        let optional = |text: &Option<String>| text.as_ref().map_or(0, String::len);
        self.check(
            [
                ("id", meta.id.len()),
                ("uri", optional(&meta.uri)),
                ("content_type", optional(&meta.content_type)),
                ("event_time", optional(&meta.event_time)),
            ],
            &meta.attributes,
        )
    }
}

impl OversizedField {
    /// Names the key rather than the value of an attribute as the oversized part.
    fn with_key_size(mut self) -> Self {
        self.field.push_str(" (its key)");
        self
    }
}

/// Length of `value` as compact JSON, without building the text.
fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a `Value` to a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// The largest char boundary of `text` at or below `at`.
fn floor_boundary(text: &str, at: usize) -> usize {
    (0..=at.min(text.len())).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_envelope_field_is_capped() {
        let cap = EnvelopeFieldCap::default();
        let ok =
            EventMeta { id: "a".repeat(4096), event_time: Some("2026-12-07T10:00:00Z".into()), ..EventMeta::default() };
        assert_eq!(cap.check_meta(&ok), Ok(()));
        let huge = "x".repeat(4097);
        for (field, meta) in [
            ("id", EventMeta { id: huge.clone(), ..EventMeta::default() }),
            ("uri", EventMeta { uri: Some(huge.clone()), ..EventMeta::default() }),
            ("content_type", EventMeta { content_type: Some(huge.clone()), ..EventMeta::default() }),
            ("event_time", EventMeta { event_time: Some(huge.clone()), ..EventMeta::default() }),
        ] {
            let err = cap.check_meta(&meta).unwrap_err();
            assert_eq!((err.field.as_str(), err.bytes, err.limit), (field, 4097, 4096));
            assert!(err.to_string().contains("max_envelope_field_bytes = 4096"), "{err}");
        }
        let mut attributes = Map::new();
        attributes.insert(huge.clone(), "v".into());
        let err = cap.check(std::iter::empty(), &attributes).unwrap_err();
        assert!(err.field.starts_with("attributes.xxx") && err.field.ends_with("(its key)"), "{err}");
        let mut attributes = Map::new();
        attributes.insert("k".into(), Value::String("y".repeat(4095)));
        assert_eq!(cap.check(std::iter::empty(), &attributes).unwrap_err().bytes, 4097, "the value as JSON");
        // Many small attributes are capped as a whole.
        let many: Map<String, Value> = (0..200).map(|i| (format!("k{i}"), Value::String("z".repeat(400)))).collect();
        let err = cap.check(std::iter::empty(), &many).unwrap_err();
        assert_eq!((err.field.as_str(), err.limit), ("attributes", 4096 * 16));
        assert!(err.to_string().contains("= 4096 (the attributes"), "{err}");
    }

    #[test]
    fn the_cap_has_bounds() {
        assert_eq!(EnvelopeFieldCap::new(63), None);
        assert_eq!(EnvelopeFieldCap::new(64 * 1024 + 1), None);
        assert_eq!(EnvelopeFieldCap::new(100).map(EnvelopeFieldCap::bytes), Some(100));
    }
}
