//! Dead letters written by the sources: a [`RejectedImage`] at stage `ingest`, with the original value
//! kept whole up to [`PAYLOAD_CAP`] and above it only its head, size and SHA-256, so that a dead letter
//! always fits the dead-letter topic (an oversized input must not become an oversized dead letter).

use fvision_records::{EventMeta, OriginalPayload, RejectReason, RejectedImage, Stage, ValidationRecord};
use sha2::{Digest, Sha256};

/// Largest original value a source's dead letter carries whole.
pub const PAYLOAD_CAP: usize = 64 * 1024;

/// How much of a larger value is kept.
pub const PAYLOAD_HEAD: usize = 4 * 1024;

/// A rejection of `original` by a source, carrying `meta` (id, position, attributes).
pub fn source_rejection(
    reason: RejectReason,
    detail: impl Into<String>,
    meta: EventMeta,
    original: &[u8],
) -> RejectedImage {
    let mut detail = detail.into();
    let kept = if original.len() > PAYLOAD_CAP {
        let digest = Sha256::digest(original);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        detail.push_str(&format!(
            " (payload of {} bytes over the {PAYLOAD_CAP}-byte dead-letter cap: only its first {PAYLOAD_HEAD} bytes are \
             kept; sha256 {hex})",
            original.len()
        ));
        &original[..PAYLOAD_HEAD]
    } else {
        original
    };
    let mut rejected = RejectedImage::new(reason, detail, Stage::Ingest, kept).with_event(meta);
    rejected.payload = OriginalPayload::from_bytes(kept);
    rejected
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
        assert_eq!(small.stage, Stage::Ingest);
        let big = vec![7u8; PAYLOAD_CAP + 1];
        let capped = source_rejection(RejectReason::TooLarge, "too big", EventMeta::default(), &big);
        assert_eq!(capped.payload.to_bytes().unwrap().len(), PAYLOAD_HEAD);
        assert!(capped.detail.starts_with("too big (payload of 65537 bytes"), "{}", capped.detail);
        let expected: String = Sha256::digest(&big).iter().map(|b| format!("{b:02x}")).collect();
        assert!(capped.detail.contains(&expected));
        let json: serde_json::Value = serde_json::from_slice(&encode(capped).unwrap()).unwrap();
        assert_eq!((json["status"].as_str(), json["reason"].as_str()), (Some("rejected"), Some("too_large")));
    }
}
