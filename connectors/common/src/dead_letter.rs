//! Dead letters written by the sources: a [`RejectedImage`] at stage `ingest`, with the original value
//! kept whole up to [`PAYLOAD_CAP`] and above it only its head, size and SHA-256 (the records' capped
//! payload), so that a dead letter always fits the dead-letter topic.

use fvision_records::{EventMeta, PayloadCap, RejectReason, RejectedImage, Stage, ValidationRecord};

/// Largest original value (serialised) a source's dead letter carries whole; above it the dead letter keeps
/// the first bytes, with `payload_truncated`, `payload_size` and `payload_sha256`.
pub const PAYLOAD_CAP: usize = 64 * 1024;

/// A rejection of `original` by a source, carrying `meta` (id, position, attributes), payload capped at
/// [`PAYLOAD_CAP`].
pub fn source_rejection(
    reason: RejectReason,
    detail: impl Into<String>,
    meta: EventMeta,
    original: &[u8],
) -> RejectedImage {
    RejectedImage::capped(reason, detail, Stage::Ingest, original, PayloadCap::new(PAYLOAD_CAP)).with_event(meta)
}

/// The record value of a dead letter, as the validator and the sink write them (`status: rejected`).
pub fn encode(rejected: RejectedImage) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&ValidationRecord::Rejected(rejected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_payloads_are_kept_whole_and_large_ones_capped() {
        let small = source_rejection(RejectReason::Empty, "x", EventMeta::default(), b"abc");
        assert_eq!(small.payload.to_bytes().unwrap(), b"abc");
        assert_eq!((small.stage, small.payload_truncated), (Stage::Ingest, false));
        let big = vec![7u8; PAYLOAD_CAP + 1];
        let capped = source_rejection(RejectReason::TooLarge, "too big", EventMeta::default(), &big);
        assert!(capped.payload_truncated);
        assert!(capped.payload.to_bytes().unwrap().len() < PAYLOAD_CAP);
        assert_eq!(capped.payload_size, Some(big.len() as u64));
        let json: serde_json::Value = serde_json::from_slice(&encode(capped).unwrap()).unwrap();
        assert_eq!((json["status"].as_str(), json["reason"].as_str()), (Some("rejected"), Some("too_large")));
        assert_eq!(json["payload_sha256"].as_str().map(str::len), Some(64));
    }
}
