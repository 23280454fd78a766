//! What the `image-validate` SmartModule emits: one record per input, validated or rejected.

use crate::{EventMeta, ImageEvent, ImageFormat, RejectReason, Stage};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

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
}

/// The exact bytes of a rejected record, so it can be inspected and replayed.
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

    /// The original record value, byte for byte.
    pub fn to_bytes(&self) -> Result<Vec<u8>, base64::DecodeError> {
        match self {
            Self::Utf8(text) => Ok(text.as_bytes().to_vec()),
            Self::Base64(b64) => base64::engine::general_purpose::STANDARD.decode(b64),
        }
    }
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
    /// The envelope fields (everything but `data`), as far as they could be read.
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
    /// Where the record was read: `topic/partition@offset` for consumed records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// True when `payload` does not hold the whole record value (a dead letter by reference carries none of
    /// it: `record` says where it is).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub payload_truncated: bool,
    /// Size of the whole record value in bytes, when truncated and known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_size: Option<u64>,
    /// The record value exactly as it arrived; empty when `payload_truncated` by reference.
    pub payload: OriginalPayload,
}

impl RejectedImage {
    /// A rejection that knows nothing yet but the reason and the original bytes; callers fill in
    /// what they could read.
    pub fn new(reason: RejectReason, detail: impl Into<String>, stage: Stage, original: &[u8]) -> Self {
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
            payload_truncated: false,
            payload_size: None,
            payload: OriginalPayload::from_bytes(original),
        }
    }

    /// A rejection of a record that is not carried, only referenced: where it is (`topic/partition@offset`)
    /// and its size when known. For records too large for the consumer's `max-bytes`.
    pub fn by_reference(
        reason: RejectReason,
        detail: impl Into<String>,
        stage: Stage,
        record: impl Into<String>,
        size: Option<u64>,
    ) -> Self {
        Self {
            payload_truncated: true,
            payload_size: size,
            record: Some(record.into()),
            ..Self::new(reason, detail, stage, &[])
        }
    }

    /// Adds the envelope fields of an event that could be parsed.
    pub fn with_event(mut self, event: EventMeta) -> Self {
        self.event = event;
        self
    }
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
        };
        let json = serde_json::to_value(ValidationRecord::Ok(ok.clone())).unwrap();
        assert_eq!(json["status"], "ok");
        assert_eq!(json["format"], "png");
        assert_eq!(json["data"], "AAAA");
        let back: ValidationRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, ValidationRecord::Ok(ok));
    }

    #[test]
    fn reason_codes_serialize_as_their_stable_names() {
        for reason in RejectReason::ALL {
            let json = serde_json::to_value(reason).unwrap();
            assert_eq!(json, reason.as_str());
        }
    }
}
