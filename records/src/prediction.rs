//! `Prediction`: what the inference stage writes to `predictions` and every other sink.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Source;

/// One class and its probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassScore {
    /// Human label from the model's label file.
    pub label: String,
    /// Index into the model's output vector.
    pub class_index: usize,
    /// Softmax probability in [0, 1].
    pub confidence: f32,
}

/// Time spent per stage for one image, in milliseconds, so slow stages show up per record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageTimings {
    /// base64 and pixel decoding.
    pub decode_ms: f64,
    /// Colour conversion, resize, crop, normalisation.
    pub preprocess_ms: f64,
    /// Waiting in the micro-batcher for a batch to fill.
    pub queue_ms: f64,
    /// This image's share of the batch inference time.
    pub inference_ms: f64,
}

/// A classification result: a superset of the BigQuery row of the job this project replaces.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Deterministic: see [`prediction_id`]. Sinks deduplicate on it.
    pub prediction_id: String,
    /// The `ImageEvent` id.
    pub image_id: String,
    /// Top-1 label.
    pub label: String,
    /// Top-1 class index.
    pub class_index: usize,
    /// Top-1 probability.
    pub confidence: f32,
    /// The k best classes, best first.
    pub top_k: Vec<ClassScore>,
    /// Model name from its manifest.
    pub model_name: String,
    /// Model version from its manifest.
    pub model_version: String,
    /// End-to-end time in this process, from receiving the image to the prediction.
    pub processing_time_ms: f64,
    /// Per-stage split of `processing_time_ms`.
    pub timings: StageTimings,
    /// Encoded image size.
    pub image_size_bytes: u64,
    /// Stored width of the image.
    pub width: u32,
    /// Stored height of the image.
    pub height: u32,
    /// Where the image came from.
    pub source: Source,
    /// GCS bucket, when the image came from GCS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// GCS object name, when the image came from GCS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_name: Option<String>,
    /// The event's own timestamp (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<String>,
    /// When the prediction was made (RFC 3339, UTC).
    pub processed_at: String,
    /// Whether `confidence` reached the configured threshold.
    pub above_threshold: bool,
}

/// SHA-256 of an image file's bytes (after base64 decoding): what tells two images under one id apart, and
/// what makes one image delivered twice, in any encoding, the same image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImageDigest([u8; 32]);

impl ImageDigest {
    /// The digest of `image`, the decoded image file.
    pub fn of(image: &[u8]) -> Self {
        Self(Sha256::digest(image).into())
    }
}

/// The prediction id for an image under a model: the same inputs always give the same id, so a
/// replay after a crash, or the same image delivered again by another source process, overwrites instead of
/// duplicating (BigQuery insertId, Kafka key, GCS object); a different image under a reused id gets its own.
pub fn prediction_id(image_id: &str, image: &ImageDigest, model_name: &str, model_version: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [image_id.as_bytes(), &image.0, model_name.as_bytes(), model_version.as_bytes()] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prediction_id_is_deterministic_and_unambiguous() {
        let png = ImageDigest::of(b"png bytes");
        let a = prediction_id("img-1", &png, "efficientnet-lite0", "1");
        assert_eq!(a, prediction_id("img-1", &ImageDigest::of(b"png bytes"), "efficientnet-lite0", "1"));
        assert_eq!(a.len(), 32);
        assert_ne!(a, prediction_id("img-1", &png, "efficientnet-lite0", "2"));
        // Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        assert_ne!(prediction_id("ab", &png, "c", "1"), prediction_id("a", &png, "bc", "1"));
    }

    #[test]
    fn two_images_under_one_id_get_two_prediction_ids() {
        // A camera reusing `camera-1`: a different image is a different prediction, the same bytes the same one.
        let first = prediction_id("camera-1", &ImageDigest::of(b"frame 1"), "m", "1");
        assert_ne!(first, prediction_id("camera-1", &ImageDigest::of(b"frame 2"), "m", "1"));
        assert_eq!(first, prediction_id("camera-1", &ImageDigest::of(b"frame 1"), "m", "1"));
    }
}
