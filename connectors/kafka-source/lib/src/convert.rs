//! Kafka record → ImageEvent (or a dead letter): pure, so every value format is unit-tested without a
//! broker.
//!
//! Attributes added to every event (documented in the RUNBOOK): `kafka_topic`, `kafka_partition`,
//! `kafka_offset`, `kafka_key` (the key as text; `kafka_key_base64` when it is not UTF-8) and
//! `kafka_headers` (name → value; a value that is not UTF-8 is written as `base64:<standard base64>`).

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use fvision_connector_common::dead_letter::source_rejection;
use fvision_records::{EnvelopeFieldCap, EventMeta, ImageEvent, RejectReason, RejectedImage, Source};
use serde_json::{Map, Value};

use crate::config::ValueFormat;

/// The parts of a Kafka record the conversion reads.
#[derive(Debug, Clone, Default)]
pub struct KafkaRecord<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Create or log-append time, milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
    /// The key.
    pub key: Option<&'a [u8]>,
    /// Headers in order.
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
    /// The value.
    pub value: Option<&'a [u8]>,
}

impl KafkaRecord<'_> {
    /// `kafka://topic/partition/offset`: the record's id when the value does not bring its own.
    pub fn uri(&self) -> String {
        format!("kafka://{}/{}/{}", self.topic, self.partition, self.offset)
    }

    /// What every event from this record carries: position, key, headers, time.
    fn meta(&self) -> EventMeta {
        let mut attributes = Map::new();
        attributes.insert("kafka_topic".into(), self.topic.into());
        attributes.insert("kafka_partition".into(), self.partition.into());
        attributes.insert("kafka_offset".into(), self.offset.into());
        if let Some(key) = self.key {
            match std::str::from_utf8(key) {
                Ok(text) => attributes.insert("kafka_key".into(), text.into()),
                Err(_) => attributes.insert("kafka_key_base64".into(), b64(key).into()),
            };
        }
        if !self.headers.is_empty() {
            let headers: Map<String, Value> = self
                .headers
                .iter()
                .map(|(name, value)| {
                    let value = match value.map(std::str::from_utf8) {
                        None => Value::Null,
                        Some(Ok(text)) => text.into(),
                        Some(Err(_)) => format!("base64:{}", b64(value.unwrap_or_default())).into(),
                    };
                    (name.to_string(), value)
                })
                .collect();
            attributes.insert("kafka_headers".into(), headers.into());
        }
        EventMeta {
            id: self.uri(),
            source: Source::Kafka,
            uri: Some(self.uri()),
            content_type: None,
            attributes,
            event_time: self.timestamp_ms.and_then(rfc3339_millis),
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Milliseconds since the epoch as RFC 3339 (UTC); `None` for negative (unknown) timestamps.
pub fn rfc3339_millis(ms: i64) -> Option<String> {
    let ms = u64::try_from(ms).ok()?;
    Some(humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string())
}

/// What a record becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Converted {
    /// An event for `images`.
    Event(ImageEvent),
    /// A dead letter for `images-dlq`.
    Rejected(Box<RejectedImage>),
}

impl Converted {
    /// An event whose envelope field (the value's own `id`, `event_time`, ..., the key or headers copied into
    /// its attributes) is above `cap` becomes a `malformed_envelope` dead letter here, before it is written:
    /// every later stage copies these fields, and one huge field would make records that outputs refuse.
    pub fn capped(self, record: &KafkaRecord<'_>, cap: EnvelopeFieldCap) -> Self {
        match self {
            Self::Event(event) => match cap.check_meta(&event.meta) {
                Ok(()) => Self::Event(event),
                Err(oversized) => Self::Rejected(Box::new(source_rejection(
                    RejectReason::MalformedEnvelope,
                    format!("{}: {oversized}", record.uri()),
                    event.meta,
                    record.value.unwrap_or_default(),
                ))),
            },
            rejected => rejected,
        }
    }
}

/// Converts one record read in `format` (`data_field` names the base64 field of JSON values).
pub fn convert(record: &KafkaRecord<'_>, format: ValueFormat, data_field: &str) -> Converted {
    let meta = record.meta();
    let value = record.value.unwrap_or_default();
    let reject = |reason: RejectReason, detail: String| {
        Converted::Rejected(Box::new(source_rejection(reason, detail, record.meta(), value)))
    };
    if value.iter().all(u8::is_ascii_whitespace) {
        return reject(RejectReason::Empty, format!("{}: the record value is empty", record.uri()));
    }
    let looks_like_json = value.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let format = match format {
        ValueFormat::Auto if looks_like_json => ValueFormat::JsonField,
        ValueFormat::Auto if looks_like_base64(value) => ValueFormat::Base64,
        ValueFormat::Auto => ValueFormat::Raw,
        other => other,
    };
    match format {
        ValueFormat::Raw => Converted::Event(ImageEvent { meta, data: b64(value) }),
        ValueFormat::Base64 => match std::str::from_utf8(value) {
            Ok(text) => Converted::Event(ImageEvent { meta, data: text.trim().to_string() }),
            Err(_) => reject(RejectReason::InvalidBase64, format!("{}: the value is not base64 text", record.uri())),
        },
        ValueFormat::Event | ValueFormat::JsonField | ValueFormat::Auto => {
            let object = match serde_json::from_slice::<Value>(value) {
                Ok(Value::Object(object)) => object,
                Ok(_) => {
                    return reject(
                        RejectReason::MalformedEnvelope,
                        format!("{}: the JSON value is not an object", record.uri()),
                    )
                }
                Err(e) => {
                    return reject(RejectReason::MalformedEnvelope, format!("{}: not valid JSON: {e}", record.uri()))
                }
            };
            if object.get("data").is_some_and(Value::is_string) || format == ValueFormat::Event {
                wrapped_event(record, object, meta, value)
            } else {
                json_field(record, object, meta, data_field, value)
            }
        }
    }
}

/// An ImageEvent in the value keeps its own id, source, URI and event time; the Kafka facts are added to
/// its attributes (never overwriting its own).
fn wrapped_event(record: &KafkaRecord<'_>, object: Map<String, Value>, kafka: EventMeta, value: &[u8]) -> Converted {
    let mut event: ImageEvent = match serde_json::from_value(Value::Object(object)) {
        Ok(event) => event,
        Err(e) => {
            return Converted::Rejected(Box::new(source_rejection(
                RejectReason::MalformedEnvelope,
                format!("{}: not an ImageEvent: {e}", record.uri()),
                kafka,
                value,
            )))
        }
    };
    let meta = &mut event.meta;
    if meta.id.is_empty() {
        meta.id = kafka.id;
    }
    if meta.uri.is_none() {
        meta.uri = kafka.uri;
    }
    if meta.event_time.is_none() {
        meta.event_time = kafka.event_time;
    }
    for (name, value) in kafka.attributes {
        meta.attributes.entry(name).or_insert(value);
    }
    if event.data.trim().is_empty() {
        // Rejected under the event's own id, as its prediction would have been: whoever sent it finds it.
        return Converted::Rejected(Box::new(source_rejection(
            RejectReason::Empty,
            format!("{}: the event's `data` is empty", record.uri()),
            event.meta,
            value,
        )));
    }
    Converted::Event(event)
}

/// A JSON object holding the base64 in `field`; its other scalar fields become attributes.
fn json_field(
    record: &KafkaRecord<'_>,
    mut object: Map<String, Value>,
    mut meta: EventMeta,
    field: &str,
    value: &[u8],
) -> Converted {
    let data = match object.remove(field) {
        Some(Value::String(data)) if !data.trim().is_empty() => data,
        Some(Value::String(_)) => {
            return Converted::Rejected(Box::new(source_rejection(
                RejectReason::Empty,
                format!("{}: `{field}` is empty", record.uri()),
                meta,
                value,
            )))
        }
        _ => {
            return Converted::Rejected(Box::new(source_rejection(
                RejectReason::MalformedEnvelope,
                format!("{}: a JSON value without a string `data` or `{field}` field", record.uri()),
                meta,
                value,
            )))
        }
    };
    for (name, v) in object {
        if matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
            meta.attributes.entry(name).or_insert(v);
        }
    }
    Converted::Event(ImageEvent { meta, data })
}

/// Base64 text (any variant, line breaks allowed) or a `data:` URI, rather than image bytes.
fn looks_like_base64(value: &[u8]) -> bool {
    let text = value.trim_ascii();
    text.starts_with(b"data:")
        || text
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_' | b'\r' | b'\n'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    fn record(value: &[u8]) -> KafkaRecord<'_> {
        KafkaRecord {
            topic: "image-stream",
            partition: 2,
            offset: 41,
            timestamp_ms: Some(1_700_000_000_123),
            key: Some(b"k1"),
            headers: vec![("trace", Some(b"abc".as_slice())), ("bin", Some(&[0xff, 0x00][..])), ("none", None)],
            value: Some(value),
        }
    }

    fn event(converted: Converted) -> ImageEvent {
        match converted {
            Converted::Event(event) => event,
            Converted::Rejected(r) => panic!("rejected: {r:?}"),
        }
    }

    fn rejected(converted: Converted) -> RejectedImage {
        match converted {
            Converted::Rejected(r) => *r,
            Converted::Event(e) => panic!("accepted: {e:?}"),
        }
    }

    #[test]
    fn raw_bytes_are_wrapped_with_the_kafka_position_key_headers_and_time() {
        let e = event(convert(&record(PNG), ValueFormat::Auto, "image_data"));
        assert_eq!(e.meta.id, "kafka://image-stream/2/41");
        assert_eq!(e.meta.uri.as_deref(), Some("kafka://image-stream/2/41"));
        assert_eq!(e.meta.source, Source::Kafka);
        assert_eq!(e.meta.event_time.as_deref(), Some("2023-11-14T22:13:20.123Z"));
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(&e.data).unwrap(), PNG);
        let a = &e.meta.attributes;
        assert_eq!((a["kafka_topic"].as_str(), a["kafka_partition"].as_i64()), (Some("image-stream"), Some(2)));
        assert_eq!((a["kafka_offset"].as_i64(), a["kafka_key"].as_str()), (Some(41), Some("k1")));
        assert_eq!(a["kafka_headers"]["trace"], "abc");
        assert_eq!(a["kafka_headers"]["bin"], "base64:/wA=");
        assert!(a["kafka_headers"]["none"].is_null());
    }

    #[test]
    fn base64_text_is_taken_as_is() {
        let text = b64(PNG);
        let e = event(convert(&record(format!("{text}\n").as_bytes()), ValueFormat::Auto, "image_data"));
        assert_eq!(e.data, text);
        let uri = format!("data:image/png;base64,{text}");
        assert_eq!(event(convert(&record(uri.as_bytes()), ValueFormat::Auto, "x")).data, uri);
        // Raw bytes read as base64 text in `base64` mode are refused, not guessed.
        assert_eq!(rejected(convert(&record(PNG), ValueFormat::Base64, "x")).reason, RejectReason::InvalidBase64);
    }

    #[test]
    fn an_image_event_keeps_its_id_source_and_time() {
        let value = serde_json::json!({
            "id": "sim-7", "source": "simulator", "event_time": "2026-01-01T00:00:00Z", "data": b64(PNG),
            "attributes": {"kafka_key": "mine"}
        })
        .to_string();
        let e = event(convert(&record(value.as_bytes()), ValueFormat::Auto, "image_data"));
        assert_eq!((e.meta.id.as_str(), e.meta.source), ("sim-7", Source::Simulator));
        assert_eq!(e.meta.event_time.as_deref(), Some("2026-01-01T00:00:00Z"));
        assert_eq!(e.meta.uri.as_deref(), Some("kafka://image-stream/2/41"));
        assert_eq!(e.meta.attributes["kafka_key"], "mine", "the event's own attributes win");
        assert_eq!(e.meta.attributes["kafka_offset"], 41);
        assert_eq!(event(convert(&record(value.as_bytes()), ValueFormat::Event, "x")).meta.id, "sim-7");
    }

    #[test]
    fn an_image_event_without_data_is_rejected_under_its_own_id() {
        let value = serde_json::json!({"id": "sim-8", "source": "simulator", "data": ""}).to_string();
        let Converted::Rejected(rejected) = convert(&record(value.as_bytes()), ValueFormat::Auto, "image_data") else {
            panic!("an empty event must be rejected");
        };
        assert_eq!(rejected.reason, RejectReason::Empty);
        assert_eq!((rejected.event.id.as_str(), rejected.event.source), ("sim-8", Source::Simulator));
        assert_eq!(rejected.event.uri.as_deref(), Some("kafka://image-stream/2/41"), "the position is kept too");
    }

    #[test]
    fn a_json_field_holds_the_image_and_the_rest_become_attributes() {
        let value = serde_json::json!({"image_data": b64(PNG), "camera": "gate-3", "seq": 9, "nested": {"a": 1}});
        let e = event(convert(&record(value.to_string().as_bytes()), ValueFormat::Auto, "image_data"));
        assert_eq!(e.data, b64(PNG));
        assert_eq!(e.meta.id, "kafka://image-stream/2/41");
        assert_eq!(
            (e.meta.attributes["camera"].as_str(), e.meta.attributes["seq"].as_i64()),
            (Some("gate-3"), Some(9))
        );
        assert!(!e.meta.attributes.contains_key("nested"));
    }

    #[test]
    fn values_that_cannot_become_events_are_rejected_with_their_position() {
        for (value, reason) in [
            (&b""[..], RejectReason::Empty),
            (b"  \n", RejectReason::Empty),
            (b"{\"id\": \"x\", \"data\": ", RejectReason::MalformedEnvelope),
            (b"{\"camera\": \"no image\"}", RejectReason::MalformedEnvelope),
            (b"{\"image_data\": \"\"}", RejectReason::Empty),
            (b"{\"data\": \"\"}", RejectReason::Empty),
            (b"{\"data\": 5}", RejectReason::MalformedEnvelope),
        ] {
            let r = rejected(convert(&record(value), ValueFormat::Auto, "image_data"));
            assert_eq!(r.reason, reason, "{}", String::from_utf8_lossy(value));
            assert_eq!(r.event.id, "kafka://image-stream/2/41");
            assert_eq!(r.event.attributes["kafka_offset"], 41);
            assert_eq!(r.payload.to_bytes().unwrap(), value);
        }
        let none = KafkaRecord { value: None, ..record(b"") };
        assert_eq!(rejected(convert(&none, ValueFormat::Raw, "x")).reason, RejectReason::Empty);
    }

    #[test]
    fn huge_envelope_fields_become_dead_letters_before_they_are_written() {
        let cap = EnvelopeFieldCap::default();
        let huge = "k".repeat(600_000);
        let own_id = format!(r#"{{"id":"{huge}","data":"AAAA"}}"#);
        let event_time = format!(r#"{{"id":"t","event_time":"{}","data":"AAAA"}}"#, "9".repeat(2 << 20));
        let key = KafkaRecord { key: Some(huge.as_bytes()), ..record(PNG) };
        let header = KafkaRecord { headers: vec![("h", Some(huge.as_bytes()))], ..record(PNG) };
        for (field, record) in [
            ("id", record(own_id.as_bytes())),
            ("event_time", record(event_time.as_bytes())),
            ("attributes.kafka_key", key),
            ("attributes.kafka_headers", header),
        ] {
            let r = rejected(convert(&record, ValueFormat::Auto, "image_data").capped(&record, cap));
            assert_eq!(r.reason, RejectReason::MalformedEnvelope, "{field}");
            assert!(r.detail.contains(&format!("field `{field}` is ")), "{}", r.detail);
            assert!(r.detail.starts_with("kafka://image-stream/2/41: "), "{}", r.detail);
            let json = fvision_connector_common::dead_letter::encode(r).unwrap();
            assert!(json.len() < 80 * 1024, "{field}: the dead letter is small ({} bytes)", json.len());
        }
        // Within the cap nothing changes.
        assert!(matches!(convert(&record(PNG), ValueFormat::Auto, "x").capped(&record(PNG), cap), Converted::Event(_)));
    }
}
