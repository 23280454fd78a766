//! What the `image-validate` SmartModule emits: one record per input, validated or rejected; and the one
//! place where a dead letter's payload is capped, so every rejected record fits under the producer's and the
//! consumer's size limits whatever the input.

use crate::{EventMeta, ImageEvent, ImageFormat, RejectReason, Stage};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The default [`PayloadCap`]: 1 MiB of serialised payload, far under Fluvio's 16 MiB fetch and request
/// limits, so a dead letter with its envelope fields and detail always fits.
pub const DEFAULT_PAYLOAD_CAP: usize = 1 << 20;

/// The smallest cap accepted: the kept head of a truncated payload must fit under it.
pub const MIN_PAYLOAD_CAP: usize = 16 * 1024;

/// How many bytes of a truncated payload a dead letter keeps, enough to see the header or the envelope start.
pub const PAYLOAD_HEAD_BYTES: usize = 1024;

/// The envelope fields a rejection carries are cut down when they serialise above this many bytes.
pub const EVENT_META_CAP: usize = 64 * 1024;

/// Longest string field of the envelope kept when the envelope is cut down.
const META_STRING_BYTES: usize = 1024;

/// The largest serialised payload a dead letter carries (the JSON string in `payload.data`, quotes and
/// escapes included: JSON escapes a control byte as six bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadCap(usize);

impl PayloadCap {
    /// A cap of `bytes`, raised to [`MIN_PAYLOAD_CAP`] when smaller.
    pub fn new(bytes: usize) -> Self {
        Self(bytes.max(MIN_PAYLOAD_CAP))
    }

    /// The cap in bytes.
    pub fn bytes(self) -> usize {
        self.0
    }
}

impl Default for PayloadCap {
    fn default() -> Self {
        Self(DEFAULT_PAYLOAD_CAP)
    }
}

/// An image that passed validation: the event (with canonical standard base64 `data` and a non-empty
/// `id`) plus what was read from its header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidatedImage {
    /// The original event, `data` re-encoded to padded standard base64 when it came in another variant.
    #[serde(flatten)]
    pub event: ImageEvent,
    /// Format identified from the magic bytes.
    pub format: ImageFormat,
    /// Width from the header, as stored (before any EXIF rotation).
    pub width: u32,
    /// Height from the header, as stored.
    pub height: u32,
    /// Size of the encoded image file in bytes (after base64 decoding).
    pub size_bytes: u64,
    /// How to get the record value as produced back from this record, so that a later stage's dead letter
    /// carries it byte for byte when validation ran elsewhere (on the SPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<OriginalForm>,
}

/// How a validated record relates to the record value it was made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "form", rename_all = "snake_case")]
pub enum OriginalForm {
    /// The value was the image file itself: `data` decodes to it.
    Image,
    /// The value was exactly the text of `data` (padded standard base64).
    Data,
    /// The value is `{` followed by the last `tail` bytes of the validated record: the validator wrote its
    /// fields in front of the envelope's own text.
    Envelope {
        /// Bytes of the validated record, from its end, that are the envelope after its opening brace.
        tail: u64,
    },
    /// Any other value, as a dead letter carries it (capped).
    Payload(CappedPayload),
}

impl OriginalForm {
    /// The record value as produced (or as a dead letter carries it), given the validated record's own bytes
    /// `record` and its event. `None` when the form does not match the record (a module of another version).
    pub fn rebuild(&self, record: &[u8], event: &ImageEvent, cap: PayloadCap) -> Option<CappedPayload> {
        let bytes = match self {
            Self::Image => base64::engine::general_purpose::STANDARD.decode(&event.data).ok()?,
            Self::Data => event.data.as_bytes().to_vec(),
            Self::Envelope { tail } => {
                let tail = usize::try_from(*tail).ok()?;
                let start = record.len().checked_sub(tail)?;
                let mut bytes = Vec::with_capacity(tail + 1);
                bytes.push(b'{');
                bytes.extend_from_slice(&record[start..]);
                bytes
            }
            Self::Payload(capped) => return Some(capped.clone()),
        };
        Some(CappedPayload::new(&bytes, cap))
    }
}

/// The exact bytes of a rejected record (or their first bytes, see [`CappedPayload`]), so it can be
/// inspected and replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "encoding", content = "data", rename_all = "lowercase")]
pub enum OriginalPayload {
    /// The record value was valid UTF-8 (JSON envelopes, base64 text): kept verbatim.
    Utf8(String),
    /// Anything else (raw image bytes): standard base64.
    Base64(String),
}

impl OriginalPayload {
    /// Keeps `bytes` verbatim when they are text, as base64 otherwise.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        match core::str::from_utf8(bytes) {
            Ok(text) => Self::Utf8(text.to_owned()),
            Err(_) => Self::Base64(base64::engine::general_purpose::STANDARD.encode(bytes)),
        }
    }

    /// The original record value, byte for byte (the first bytes only, when the payload was truncated).
    pub fn to_bytes(&self) -> Result<Vec<u8>, base64::DecodeError> {
        match self {
            Self::Utf8(text) => Ok(text.as_bytes().to_vec()),
            Self::Base64(b64) => base64::engine::general_purpose::STANDARD.decode(b64),
        }
    }
}

/// A record value as a dead letter carries it: whole when its serialised form fits under the cap, else its
/// first [`PAYLOAD_HEAD_BYTES`] with the whole value's size and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CappedPayload {
    /// The value, or its first bytes.
    pub payload: OriginalPayload,
    /// True when `payload` holds only the first bytes.
    #[serde(default, skip_serializing_if = "is_false")]
    pub payload_truncated: bool,
    /// Size of the whole value in bytes, when truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_size: Option<u64>,
    /// Lower-case hex SHA-256 of the whole value, when truncated: to find the record again at its source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_sha256: Option<String>,
}

impl CappedPayload {
    /// `bytes` as a dead letter carries them under `cap`. The size measured is the serialised one (base64,
    /// or JSON escapes for text), so a value of control bytes, six times larger escaped, is capped too.
    pub fn new(bytes: &[u8], cap: PayloadCap) -> Self {
        let text = core::str::from_utf8(bytes).ok();
        let serialised = match text {
            Some(text) => json_string_len(text),
            None => bytes.len().div_ceil(3) * 4 + 2,
        };
        if serialised <= cap.bytes() {
            return Self::whole(OriginalPayload::from_bytes(bytes));
        }
        let payload = match text {
            Some(text) => OriginalPayload::Utf8(text[..floor_char_boundary(text, PAYLOAD_HEAD_BYTES)].to_owned()),
            None => OriginalPayload::Base64(
                base64::engine::general_purpose::STANDARD.encode(&bytes[..bytes.len().min(PAYLOAD_HEAD_BYTES)]),
            ),
        };
        let digest = Sha256::digest(bytes);
        Self {
            payload,
            payload_truncated: true,
            payload_size: Some(bytes.len() as u64),
            payload_sha256: Some(digest.iter().map(|b| format!("{b:02x}")).collect()),
        }
    }

    fn whole(payload: OriginalPayload) -> Self {
        Self { payload, payload_truncated: false, payload_size: None, payload_sha256: None }
    }
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// Length of `text` as a JSON string, quotes included, as `serde_json` writes it.
pub fn json_string_len(text: &str) -> usize {
    2 + text
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | 0x08 | 0x09 | 0x0a | 0x0c | 0x0d => 2,
            0x00..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// The largest char boundary of `text` at or below `at`.
fn floor_char_boundary(text: &str, at: usize) -> usize {
    if at >= text.len() {
        return text.len();
    }
    (0..=at).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0)
}

fn cut(text: &mut String, bytes: usize) {
    let end = floor_char_boundary(text, bytes);
    text.truncate(end);
}

/// An image that did not make it, with a stable reason code and everything needed to replay it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectedImage {
    /// Stable machine-readable code.
    pub reason: RejectReason,
    /// Human explanation, naming the limit or the byte offset where it helps.
    pub detail: String,
    /// Where in the pipeline it was rejected.
    #[serde(default)]
    pub stage: Stage,
    /// The envelope fields (everything but `data`), as far as they could be read (cut down above
    /// [`EVENT_META_CAP`]).
    #[serde(flatten)]
    pub event: EventMeta,
    /// Format, when the magic bytes were recognised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ImageFormat>,
    /// Width, when the header was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Height, when the header was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Encoded image size, when the payload was decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Where the record was read: `topic/partition@offset` for consumed records, a path for files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// True when `payload` holds only the first bytes of the record value (it was above the cap).
    #[serde(default, skip_serializing_if = "is_false")]
    pub payload_truncated: bool,
    /// Size of the whole record value in bytes, when the payload was truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_size: Option<u64>,
    /// Lower-case hex SHA-256 of the whole record value, when the payload was truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_sha256: Option<String>,
    /// The record value exactly as it arrived, or its first bytes when `payload_truncated`.
    pub payload: OriginalPayload,
}

impl RejectedImage {
    /// A rejection that knows nothing yet but the reason and the original bytes (capped at the default
    /// [`PayloadCap`]); callers fill in what they could read.
    pub fn new(reason: RejectReason, detail: impl Into<String>, stage: Stage, original: &[u8]) -> Self {
        Self::capped(reason, detail, stage, original, PayloadCap::default())
    }

    /// A rejection of a record that is not carried, only referenced: where it is (`topic/partition@offset`)
    /// and its size when known. For records too large for the consumer's fetch or the dead-letter topic.
    pub fn by_reference(
        reason: RejectReason,
        detail: impl Into<String>,
        stage: Stage,
        record: impl Into<String>,
        size: Option<u64>,
    ) -> Self {
        Self {
            record: Some(record.into()),
            payload_truncated: true,
            payload_size: size,
            ..Self::new(reason, detail, stage, &[])
        }
    }

    /// [`RejectedImage::new`] with the payload capped at `cap`: what every stage calls.
    pub fn capped(
        reason: RejectReason,
        detail: impl Into<String>,
        stage: Stage,
        original: &[u8],
        cap: PayloadCap,
    ) -> Self {
        Self::with_payload(reason, detail, stage, CappedPayload::new(original, cap))
    }

    /// A rejection carrying a payload that was already capped (rebuilt from a validated record).
    pub fn with_payload(reason: RejectReason, detail: impl Into<String>, stage: Stage, capped: CappedPayload) -> Self {
        Self {
            reason,
            detail: detail.into(),
            stage,
            event: EventMeta::default(),
            format: None,
            width: None,
            height: None,
            size_bytes: None,
            record: None,
            payload_truncated: capped.payload_truncated,
            payload_size: capped.payload_size,
            payload_sha256: capped.payload_sha256,
            payload: capped.payload,
        }
    }

    /// Adds the envelope fields of an event that could be parsed, cut down when they serialise above
    /// [`EVENT_META_CAP`] (attributes dropped, strings cut to 1 KiB), so a huge envelope cannot make a huge
    /// dead letter.
    pub fn with_event(mut self, event: EventMeta) -> Self {
        self.event = bounded_meta(event);
        self
    }

    /// Names where the record was read (`topic/partition@offset`), unless already named.
    pub fn at_record(mut self, record: &str) -> Self {
        if self.record.is_none() {
            self.record = Some(record.to_owned());
        }
        self
    }

    /// The payload as carried, for a stage that rejects a record again.
    pub fn capped_payload(&self) -> CappedPayload {
        CappedPayload {
            payload: self.payload.clone(),
            payload_truncated: self.payload_truncated,
            payload_size: self.payload_size,
            payload_sha256: self.payload_sha256.clone(),
        }
    }
}

fn bounded_meta(mut meta: EventMeta) -> EventMeta {
    let size = serde_json::to_vec(&meta).map(|v| v.len()).unwrap_or(usize::MAX);
    if size <= EVENT_META_CAP {
        return meta;
    }
    meta.attributes.clear();
    cut(&mut meta.id, META_STRING_BYTES);
    for text in [&mut meta.uri, &mut meta.content_type, &mut meta.event_time].into_iter().flatten() {
        cut(text, META_STRING_BYTES);
    }
    meta
}

/// One output record of the validator, tagged by `status` so consumers branch on one field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum ValidationRecord {
    /// Passed every check: ready for decoding and inference.
    Ok(ValidatedImage),
    /// Failed a check: belongs on the dead-letter topic.
    Rejected(RejectedImage),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_payload_round_trips_text_and_binary() {
        for bytes in [&b"{\"data\":\"x\"}"[..], &[0xff, 0xd8, 0xff, 0x00, 0x80][..]] {
            let payload = OriginalPayload::from_bytes(bytes);
            assert_eq!(payload.to_bytes().unwrap(), bytes);
        }
        assert!(matches!(OriginalPayload::from_bytes(b"abc"), OriginalPayload::Utf8(_)));
        assert!(matches!(OriginalPayload::from_bytes(&[0xff]), OriginalPayload::Base64(_)));
    }

    #[test]
    fn a_rejection_by_reference_carries_the_position_and_size_but_no_payload() {
        let rejected =
            RejectedImage::by_reference(RejectReason::TooLarge, "over max-bytes", Stage::Ingest, "images/0@7", Some(9));
        let json = serde_json::to_value(ValidationRecord::Rejected(rejected.clone())).unwrap();
        assert_eq!(
            (&json["reason"], &json["stage"], &json["record"]),
            (&"too_large".into(), &"ingest".into(), &"images/0@7".into())
        );
        assert_eq!(
            (&json["payload_size"], &json["payload_truncated"], &json["payload"]["data"]),
            (&9.into(), &true.into(), &"".into())
        );
        assert_eq!(serde_json::from_value::<ValidationRecord>(json).unwrap(), ValidationRecord::Rejected(rejected));
        // A rejection that carries its payload says nothing of these fields.
        let whole = serde_json::to_value(RejectedImage::new(RejectReason::Empty, "", Stage::Validate, b"")).unwrap();
        assert!(whole.get("payload_truncated").is_none() && whole.get("record").is_none(), "{whole}");
    }

    #[test]
    fn validation_record_is_tagged_by_status() {
        let rejected = RejectedImage::new(RejectReason::Truncated, "ends early", Stage::Validate, b"x");
        let json = serde_json::to_value(ValidationRecord::Rejected(rejected.clone())).unwrap();
        assert_eq!(json["status"], "rejected");
        assert_eq!(json["reason"], "truncated");
        assert_eq!(json["payload"]["encoding"], "utf8");
        let back: ValidationRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, ValidationRecord::Rejected(rejected));

        let ok = ValidatedImage {
            event: ImageEvent { meta: EventMeta { id: "a".into(), ..Default::default() }, data: "AAAA".into() },
            format: ImageFormat::Png,
            width: 1,
            height: 2,
            size_bytes: 3,
            original: Some(OriginalForm::Envelope { tail: 17 }),
        };
        let json = serde_json::to_value(ValidationRecord::Ok(ok.clone())).unwrap();
        assert_eq!(json["status"], "ok");
        assert_eq!(json["format"], "png");
        assert_eq!(json["data"], "AAAA");
        let back: ValidationRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, ValidationRecord::Ok(ok));
    }

    /// Hostile values of about `len` bytes: control bytes (six times larger as JSON), random binary, and a
    /// JSON envelope whose `data` and attributes are huge.
    fn hostile(len: usize) -> Vec<Vec<u8>> {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let random: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let filler = "\\u0001".repeat(len / 12);
        let envelope = format!(r#"{{"id":"big","attributes":{{"a":"{filler}"}},"data":"{}"}}"#, "A".repeat(len / 2));
        vec![vec![0x01; len], random, envelope.into_bytes()]
    }

    #[test]
    fn dead_letters_fit_under_the_cap_whatever_the_payload() {
        let cap = PayloadCap::default();
        for len in [3 << 20, 12 << 20] {
            for value in hostile(len) {
                let rejected = RejectedImage::capped(RejectReason::TooLarge, "big", Stage::Validate, &value, cap);
                let json = serde_json::to_vec(&ValidationRecord::Rejected(rejected.clone())).unwrap();
                assert!(json.len() < cap.bytes() + 4096, "{} bytes", json.len());
                assert!(rejected.payload_truncated);
                assert_eq!(rejected.payload_size, Some(value.len() as u64));
                let digest: String = Sha256::digest(&value).iter().map(|b| format!("{b:02x}")).collect();
                assert_eq!(rejected.payload_sha256.as_deref(), Some(digest.as_str()));
                let head = rejected.payload.to_bytes().unwrap();
                assert!(!head.is_empty() && value.starts_with(&head) && head.len() <= PAYLOAD_HEAD_BYTES);
                let back: ValidationRecord = serde_json::from_slice(&json).unwrap();
                assert_eq!(back, ValidationRecord::Rejected(rejected));
            }
        }
    }

    #[test]
    fn the_cap_counts_json_escapes() {
        // 200 KiB of 0x01 is 1.2 MiB as a JSON string: above the 1 MiB cap although the bytes are below it.
        let value = vec![0x01u8; 200 * 1024];
        let capped = CappedPayload::new(&value, PayloadCap::default());
        assert!(capped.payload_truncated);
        // Just under the cap stays whole, byte for byte, and says nothing about truncation.
        let text = vec![b'a'; DEFAULT_PAYLOAD_CAP - 2];
        let whole = CappedPayload::new(&text, PayloadCap::default());
        assert!(!whole.payload_truncated && whole.payload_size.is_none());
        assert_eq!(whole.payload.to_bytes().unwrap(), text);
        let json = serde_json::to_value(RejectedImage::new(RejectReason::Empty, "", Stage::Validate, b"x")).unwrap();
        assert!(json.get("payload_truncated").is_none() && json.get("payload_sha256").is_none(), "{json}");
    }

    #[test]
    fn huge_envelope_fields_are_cut_down() {
        let mut attributes = serde_json::Map::new();
        attributes.insert("blob".into(), serde_json::Value::String("x".repeat(3 << 20)));
        let meta = EventMeta { id: "é".repeat(1 << 20), attributes, ..EventMeta::default() };
        let rejected = RejectedImage::new(RejectReason::Empty, "", Stage::Validate, b"x").with_event(meta);
        assert!(serde_json::to_vec(&rejected).unwrap().len() < EVENT_META_CAP);
        assert!(rejected.event.attributes.is_empty() && rejected.event.id.len() <= 1024);
        let small = EventMeta { id: "a".into(), ..EventMeta::default() };
        assert_eq!(
            RejectedImage::new(RejectReason::Empty, "", Stage::Validate, b"x").with_event(small.clone()).event,
            small
        );
    }

    #[test]
    fn original_forms_rebuild_the_value() {
        let cap = PayloadCap::default();
        let event = ImageEvent { meta: EventMeta::default(), data: "AAEC".into() };
        assert_eq!(OriginalForm::Image.rebuild(b"", &event, cap).unwrap().payload.to_bytes().unwrap(), [0, 1, 2]);
        assert_eq!(OriginalForm::Data.rebuild(b"", &event, cap).unwrap().payload.to_bytes().unwrap(), b"AAEC");
        let record = br#"{"status":"ok","id":"x","data":"AAEC"}"#;
        let tail = br#""id":"x","data":"AAEC"}"#.len() as u64;
        let rebuilt = OriginalForm::Envelope { tail }.rebuild(record, &event, cap).unwrap();
        assert_eq!(rebuilt.payload.to_bytes().unwrap(), br#"{"id":"x","data":"AAEC"}"#);
        assert!(OriginalForm::Envelope { tail: 1000 }.rebuild(record, &event, cap).is_none());
    }

    proptest::proptest! {
        #[test]
        fn json_string_len_is_what_serde_json_writes(text in "(?s).{0,64}", bytes in proptest::collection::vec(0u8..0x80, 0..64)) {
            for text in [text, String::from_utf8(bytes).unwrap()] {
                proptest::prop_assert_eq!(json_string_len(&text), serde_json::to_string(&text).unwrap().len());
            }
        }
    }

    #[test]
    fn reason_codes_serialize_as_their_stable_names() {
        for reason in RejectReason::ALL {
            let json = serde_json::to_value(reason).unwrap();
            assert_eq!(json, reason.as_str());
        }
    }
}
