//! Stable reason codes for rejected images, and the stage that rejected them.

use core::fmt;

use serde::{Deserialize, Serialize};

/// Why an image was rejected. The serialized names are a public contract: dashboards, alerts and
/// replay tools match on them, so existing codes never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RejectReason {
    /// The record value, or its `data` field, is empty.
    Empty,
    /// The record looked like a JSON envelope but could not be parsed as an `ImageEvent`.
    MalformedEnvelope,
    /// The `data` is not valid base64 in any accepted variant.
    InvalidBase64,
    /// The bytes start with no known image signature.
    UnknownFormat,
    /// A known format that the pipeline does not decode, or that the params do not allow.
    UnsupportedFormat,
    /// The header is present but inconsistent (zero dimensions, bad segment lengths, ...).
    InvalidHeader,
    /// The file ends before its own structure says it should.
    Truncated,
    /// A checksum or structural check failed (for example a PNG chunk CRC).
    CorruptData,
    /// The encoded image is larger than `max_encoded_bytes`.
    TooLarge,
    /// width x height exceeds `max_pixels` (decompression-bomb guard).
    TooManyPixels,
    /// A side exceeds `max_side`.
    DimensionsTooLarge,
    /// The long side divided by the short side exceeds `max_aspect_ratio`.
    ExtremeAspectRatio,
    /// Full pixel decoding failed.
    DecodeError,
    /// Preprocessing (colour conversion, resize) failed.
    PreprocessError,
    /// The model failed on this image.
    InferenceError,
    /// A sink kept failing after its retries.
    SinkError,
    /// The validator itself failed on this record (a WASM trap or an engine error): a bug, kept as data.
    ValidatorError,
    /// A stage of the sink failed on this image in a way it does not expect (a decoder or model bug that
    /// panicked): the image is dead-lettered, the pipeline goes on.
    InternalError,
    /// The announced source object was gone before it could be read (a GCS object deleted, or its
    /// generation replaced, before the download).
    NotFound,
    /// Records were deleted by retention (or a recreated topic) before they were read: a dead letter by
    /// reference naming the lost range and its count, never a silent skip.
    Expired,
    /// The source object could not be downloaded after the configured number of tries (a permanent HTTP status
    /// such as 400, 401 or 403, or a download too slow every time); the status is in the detail.
    DownloadFailed,
    /// A notification for a bucket the source is not configured to read (`gcs.buckets`).
    BucketNotAllowed,
}

impl RejectReason {
    /// Every code, for documentation and metrics pre-registration.
    pub const ALL: [RejectReason; 22] = [
        Self::Empty,
        Self::MalformedEnvelope,
        Self::InvalidBase64,
        Self::UnknownFormat,
        Self::UnsupportedFormat,
        Self::InvalidHeader,
        Self::Truncated,
        Self::CorruptData,
        Self::TooLarge,
        Self::TooManyPixels,
        Self::DimensionsTooLarge,
        Self::ExtremeAspectRatio,
        Self::DecodeError,
        Self::PreprocessError,
        Self::InferenceError,
        Self::SinkError,
        Self::ValidatorError,
        Self::InternalError,
        Self::NotFound,
        Self::Expired,
        Self::DownloadFailed,
        Self::BucketNotAllowed,
    ];

    /// The stable snake_case code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::MalformedEnvelope => "malformed_envelope",
            Self::InvalidBase64 => "invalid_base64",
            Self::UnknownFormat => "unknown_format",
            Self::UnsupportedFormat => "unsupported_format",
            Self::InvalidHeader => "invalid_header",
            Self::Truncated => "truncated",
            Self::CorruptData => "corrupt_data",
            Self::TooLarge => "too_large",
            Self::TooManyPixels => "too_many_pixels",
            Self::DimensionsTooLarge => "dimensions_too_large",
            Self::ExtremeAspectRatio => "extreme_aspect_ratio",
            Self::DecodeError => "decode_error",
            Self::PreprocessError => "preprocess_error",
            Self::InferenceError => "inference_error",
            Self::SinkError => "sink_error",
            Self::ValidatorError => "validator_error",
            Self::InternalError => "internal_error",
            Self::NotFound => "not_found",
            Self::Expired => "expired",
            Self::DownloadFailed => "download_failed",
            Self::BucketNotAllowed => "bucket_not_allowed",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The pipeline stage that produced a rejection, so operators know where to look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Reading the input (CLI or source connector).
    Ingest,
    /// The `image-validate` SmartModule.
    #[default]
    Validate,
    /// Pixel decoding in the sink.
    Decode,
    /// Colour conversion, resize, normalisation.
    Preprocess,
    /// Model inference.
    Inference,
    /// Writing predictions to a sink.
    Sink,
}

impl Stage {
    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Validate => "validate",
            Self::Decode => "decode",
            Self::Preprocess => "preprocess",
            Self::Inference => "inference",
            Self::Sink => "sink",
        }
    }
}
