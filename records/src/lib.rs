//! The record formats that flow between fluvio-vision stages (see `docs/records.md`).
//!
//! Every stage (sources, the `image-validate` SmartModule, the inference sink, the CLI) speaks these
//! types, so a field is declared once and the JSON on each Fluvio topic stays the same everywhere.
//! The crate compiles to `wasm32-unknown-unknown`: it holds data and pure helpers only, plus (natively)
//! [`resources`], the one lookup of installed files that every binary shares, here because every crate
//! already depends on this one.
#![deny(missing_docs)]

mod event;
mod format;
mod prediction;
mod reason;
#[cfg(not(target_family = "wasm"))]
pub mod resources;
mod validation;

pub use event::{EnvelopeFieldCap, EventMeta, ImageEvent, OversizedField, Source, DEFAULT_ENVELOPE_FIELD_CAP};
pub use format::ImageFormat;
pub use prediction::{prediction_id, ClassScore, ImageDigest, Prediction, StageTimings};
pub use reason::{RejectReason, Stage};
pub use validation::{
    json_string_len, CappedPayload, OriginalForm, OriginalPayload, PayloadCap, RejectedImage, ValidatedImage,
    ValidationRecord, DEFAULT_PAYLOAD_CAP, EVENT_META_CAP, MIN_PAYLOAD_CAP, PAYLOAD_HEAD_BYTES,
};
