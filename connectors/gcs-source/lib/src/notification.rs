//! GCS Pub/Sub notifications (`JSON_API_V1` or `NONE` payload format): what the source reads from a
//! message, and what the simulator publishes for emulators that have no bucket notifications. Pure.

use std::collections::HashMap;

use base64::Engine as _;
use fvision_records::{EventMeta, ImageEvent, Source};
use serde_json::{Map, Value};

/// The event type of a new object (or a new generation of one).
pub const OBJECT_FINALIZE: &str = "OBJECT_FINALIZE";

/// One object generation announced by a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// Bucket.
    pub bucket: String,
    /// Object name.
    pub name: String,
    /// Generation: the download is pinned to it, and it is part of the id.
    pub generation: i64,
    /// Size in bytes, when announced.
    pub size: Option<u64>,
    /// Declared content type, when announced.
    pub content_type: Option<String>,
    /// When the object was finalised (RFC 3339), when announced.
    pub event_time: Option<String>,
}

impl ObjectRef {
    /// `gs://bucket/object#generation`: the image id, the same for every duplicate notification.
    pub fn id(&self) -> String {
        format!("gs://{}/{}#{}", self.bucket, self.name, self.generation)
    }

    /// The envelope of this object's event (and of its dead letters): id, `bucket` and `object_name`
    /// attributes (the BigQuery columns), `generation`, time.
    pub fn meta(&self) -> EventMeta {
        let mut attributes = Map::new();
        attributes.insert("bucket".into(), self.bucket.clone().into());
        attributes.insert("object_name".into(), self.name.clone().into());
        attributes.insert("generation".into(), self.generation.to_string().into());
        EventMeta {
            id: self.id(),
            source: Source::Gcs,
            uri: Some(self.id()),
            content_type: self.content_type.clone(),
            attributes,
            event_time: self.event_time.clone(),
        }
    }

    /// The event carrying the downloaded object.
    pub fn event(&self, bytes: &[u8]) -> ImageEvent {
        ImageEvent { meta: self.meta(), data: base64::engine::general_purpose::STANDARD.encode(bytes) }
    }
}

/// What a notification asks of the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A new object generation to read.
    Finalize(ObjectRef),
    /// Nothing to do; acked and counted under this reason (`event_type`, `prefix`, `content_type`).
    Ignored(&'static str),
    /// A finalize notification without the object's bucket, name or generation.
    Malformed(String),
}

/// Reads a notification's attributes and payload, keeping objects under `prefix` whose declared content
/// type is in `content_types` (empty: any; an object that declares none is kept, the validator reads its
/// bytes anyway).
pub fn read_notice(
    attributes: &HashMap<String, String>,
    data: &[u8],
    prefix: &str,
    content_types: &[String],
) -> Notice {
    if attributes.get("eventType").map(String::as_str) != Some(OBJECT_FINALIZE) {
        return Notice::Ignored("event_type");
    }
    let payload: Map<String, Value> = match serde_json::from_slice(data) {
        Ok(Value::Object(object)) => object,
        _ => Map::new(),
    };
    let text = |field: &str| payload.get(field).and_then(Value::as_str).map(str::to_string);
    let bucket = text("bucket").or_else(|| attributes.get("bucketId").cloned());
    let name = text("name").or_else(|| attributes.get("objectId").cloned());
    let generation = payload
        .get("generation")
        .and_then(|g| g.as_str().map(str::to_string).or_else(|| g.as_i64().map(|n| n.to_string())))
        .or_else(|| attributes.get("objectGeneration").cloned())
        .and_then(|g| g.parse::<i64>().ok());
    let (Some(bucket), Some(name), Some(generation)) = (bucket, name, generation) else {
        return Notice::Malformed(format!(
            "an OBJECT_FINALIZE notification without bucket, object name or generation (attributes {attributes:?})"
        ));
    };
    let size = payload.get("size").and_then(|s| s.as_str().and_then(|s| s.parse().ok()).or_else(|| s.as_u64()));
    let content_type = text("contentType");
    let event_time = attributes.get("eventTime").cloned().or_else(|| text("timeCreated")).or_else(|| text("updated"));
    if !name.starts_with(prefix) {
        return Notice::Ignored("prefix");
    }
    if let Some(declared) = &content_type {
        let base = declared.split(';').next().unwrap_or_default().trim();
        if !content_types.is_empty() && !content_types.iter().any(|t| t.eq_ignore_ascii_case(base)) {
            return Notice::Ignored("content_type");
        }
    }
    Notice::Finalize(ObjectRef { bucket, name, generation, size, content_type, event_time })
}

/// The notification GCS publishes for a new object (`JSON_API_V1`): attributes and payload. The
/// simulator publishes it itself for emulators without bucket notifications (`--notify`).
pub fn finalize_message(object: &ObjectRef) -> (HashMap<String, String>, Vec<u8>) {
    let mut attributes = HashMap::new();
    attributes.insert("eventType".into(), OBJECT_FINALIZE.into());
    attributes.insert("payloadFormat".into(), "JSON_API_V1".into());
    attributes.insert("bucketId".into(), object.bucket.clone());
    attributes.insert("objectId".into(), object.name.clone());
    attributes.insert("objectGeneration".into(), object.generation.to_string());
    if let Some(time) = &object.event_time {
        attributes.insert("eventTime".into(), time.clone());
    }
    let mut payload = serde_json::json!({
        "kind": "storage#object",
        "bucket": object.bucket,
        "name": object.name,
        "generation": object.generation.to_string(),
        "id": format!("{}/{}/{}", object.bucket, object.name, object.generation),
    });
    if let Some(size) = object.size {
        payload["size"] = size.to_string().into();
    }
    if let Some(content_type) = &object.content_type {
        payload["contentType"] = content_type.clone().into();
    }
    if let Some(time) = &object.event_time {
        payload["timeCreated"] = time.clone().into();
    }
    (attributes, payload.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object() -> ObjectRef {
        ObjectRef {
            bucket: "b".into(),
            name: "input-images/cat 1.jpg".into(),
            generation: 1_700_000_000_000_001,
            size: Some(1234),
            content_type: Some("image/jpeg".into()),
            event_time: Some("2026-12-01T10:00:00Z".into()),
        }
    }

    fn all_images() -> Vec<String> {
        vec!["image/jpeg".into(), "image/png".into()]
    }

    #[test]
    fn the_simulators_notification_reads_back_as_the_object() {
        let (attributes, data) = finalize_message(&object());
        assert_eq!(read_notice(&attributes, &data, "input-images/", &all_images()), Notice::Finalize(object()));
        assert_eq!(object().id(), "gs://b/input-images/cat 1.jpg#1700000000000001");
    }

    #[test]
    fn a_payload_less_notification_reads_the_attributes() {
        let (attributes, _) = finalize_message(&object());
        let Notice::Finalize(found) = read_notice(&attributes, b"", "", &[]) else { panic!() };
        assert_eq!((found.id(), found.size, found.content_type), (object().id(), None, None));
    }

    #[test]
    fn other_events_prefixes_and_types_are_ignored() {
        let (mut attributes, data) = finalize_message(&object());
        assert_eq!(read_notice(&attributes, &data, "other/", &[]), Notice::Ignored("prefix"));
        assert_eq!(read_notice(&attributes, &data, "", &["image/png".into()]), Notice::Ignored("content_type"));
        attributes.insert("eventType".into(), "OBJECT_DELETE".into());
        assert_eq!(read_notice(&attributes, &data, "", &[]), Notice::Ignored("event_type"));
        attributes.remove("eventType");
        assert_eq!(read_notice(&attributes, &data, "", &[]), Notice::Ignored("event_type"));
    }

    #[test]
    fn a_finalize_without_generation_is_malformed() {
        let mut attributes = HashMap::new();
        attributes.insert("eventType".to_string(), OBJECT_FINALIZE.to_string());
        attributes.insert("bucketId".to_string(), "b".to_string());
        assert!(matches!(read_notice(&attributes, b"{}", "", &[]), Notice::Malformed(_)));
    }

    #[test]
    fn the_event_carries_the_bigquery_attributes() {
        let event = object().event(b"\xff\xd8\xff");
        assert_eq!(event.meta.id, "gs://b/input-images/cat 1.jpg#1700000000000001");
        assert_eq!(event.meta.attribute("bucket"), Some("b"));
        assert_eq!(event.meta.attribute("object_name"), Some("input-images/cat 1.jpg"));
        assert_eq!(event.meta.source, Source::Gcs);
        assert_eq!(event.meta.event_time.as_deref(), Some("2026-12-01T10:00:00Z"));
        assert_eq!(event.data, "/9j/");
    }
}
